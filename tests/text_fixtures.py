"""Offline text-encoder fixtures (now packaged with fvdm: ``fvdm data make-tiny-wan``)."""

from fvdm.plugins.backbones.wan_tiny import WORDS, make_text_encoder_dir  # noqa: F401
