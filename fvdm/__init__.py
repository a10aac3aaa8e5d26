"""fvdm: frame-aware video diffusion with vectorized per-frame timesteps."""

__version__ = "0.1.0"
