"""Offline builders of tiny random video VAEs (now packaged with fvdm: ``fvdm data make-tiny-wan``)."""

from fvdm.plugins.backbones.wan_tiny import make_wan_vae_dir  # noqa: F401
