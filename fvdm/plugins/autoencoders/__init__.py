"""Built-in autoencoders: ``identity`` (pixel space) and ``sd_vae`` (Stable Diffusion VAE, per frame)."""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_autoencoders(registry):
    from fvdm.plugins.autoencoders.identity import IdentityAutoencoder
    from fvdm.plugins.autoencoders.sd_vae import SDVAE, diffusers_available

    registry.add("identity", IdentityAutoencoder)
    registry.add("sd_vae", SDVAE, extra="latent", available=diffusers_available)
