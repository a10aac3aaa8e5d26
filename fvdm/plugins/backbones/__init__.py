"""Built-in backbones with per-frame timesteps (FVDM): Latte spatial/temporal transformers and a small video U-Net."""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_backbones(registry):
    from fvdm.plugins.backbones.latte import LATTE_SIZES, Latte, size_config

    for name, (d, depth, heads, use) in LATTE_SIZES.items():
        registry.add(name, Latte, config=size_config(name),
                     description=f"{use}: Latte (D={d}, depth {depth}, {heads} heads) with per-frame timesteps")

    from fvdm.plugins.backbones.unet import UNetVideo

    registry.add("unet_video", UNetVideo, config=UNetVideo.Config,
                 description="pseudo-3D U-Net with per-frame timesteps (2-D res blocks, temporal attention): CPU digits")
