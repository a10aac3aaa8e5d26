"""Built-in backbones with per-frame timesteps (FVDM): Latte spatial/temporal transformers and a small video U-Net."""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_backbones(registry):
    from fvdm.plugins.backbones.latte import CONFIGS, Latte

    descriptions = {
        "latte_tiny": "Latte-tiny (D=64, 2 spatial+2 temporal blocks, patch 2): tests and CPU demo",
        "latte_s_2": "Latte-S/2 (D=384, depth 12, 6 heads) with per-frame timesteps",
        "latte_b_2": "Latte-B/2 (D=768, depth 12, 12 heads) with per-frame timesteps",
        "latte_l_2": "Latte-L/2 (D=1024, depth 24, 16 heads) with per-frame timesteps",
        "latte_xl_2": "Latte-XL/2 (D=1152, depth 28, 16 heads) with per-frame timesteps",
    }
    for name, config in CONFIGS.items():
        registry.add(name, Latte, config=config, description=descriptions[name])

    from fvdm.plugins.backbones.unet import UNetVideo

    registry.add("unet_video", UNetVideo, config=UNetVideo.Config,
                 description="pseudo-3D U-Net with per-frame timesteps (2-D res blocks, temporal attention): CPU digits")
