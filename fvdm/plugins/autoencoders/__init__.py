"""Built-in autoencoders: ``identity`` (pixel space), ``sd_vae`` (Stable Diffusion VAE, per frame) and ``wan_vae``
(Wan's causal video VAE: 1 + 4k frames -> 1 + k latents)."""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_autoencoders(registry):
    from fvdm.plugins.autoencoders.identity import IdentityAutoencoder
    from fvdm.plugins.autoencoders.sd_vae import SDVAE, diffusers_available

    registry.add("identity", IdentityAutoencoder)
    registry.add("sd_vae", SDVAE, extra="latent", available=diffusers_available)

    from fvdm.plugins.autoencoders.wan_vae import WanVAE

    registry.add("wan_vae", WanVAE, extra="latent", available=diffusers_available,
                 description="diffusers AutoencoderKLWan (Wan2.1 / Wan2.2 TI2V-5B), causal, 4x in time; "
                             "latents normalized by its per-channel mean and std")
