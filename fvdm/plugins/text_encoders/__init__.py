"""Built-in text encoders: ``umt5`` (Wan's umT5-XXL, prompt embeddings exactly as diffusers' WanPipeline makes them)."""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_text_encoders(registry):
    from fvdm.plugins.text_encoders.umt5 import UMT5TextEncoder, transformers_available

    registry.add("umt5", UMT5TextEncoder, extra="text", available=transformers_available)
