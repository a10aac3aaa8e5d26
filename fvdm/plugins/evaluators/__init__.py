"""Built-in evaluators (FVD, FID, PSNR/SSIM, moving-digits metrics) and feature extractors (I3D, InceptionV3, digits).

Heavy modules are imported inside the hooks; scipy (the ``sqrtm`` reference path) only
when asked for.
"""

from __future__ import annotations

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_feature_extractors(registry):
    from fvdm.plugins.evaluators.digits_net import DigitsExtractor
    from fvdm.plugins.evaluators.i3d import I3DExtractor
    from fvdm.plugins.evaluators.inception import InceptionV3FIDExtractor

    registry.add("i3d", I3DExtractor)
    registry.add("inception_v3_fid", InceptionV3FIDExtractor)
    registry.add("digits", DigitsExtractor)


@hookimpl
def fvdm_register_evaluators(registry):
    from fvdm.plugins.evaluators import fid, fvd
    from fvdm.plugins.evaluators.recon import PSNRConfig, ReconMetric, SSIMConfig

    # fvd2048_16f is the StyleGAN-V FVD16 protocol; its spelled-out name looks the same entry up
    aliases = {"fvd2048_16f": ("stylegan_v_fvd2048_16f",)}
    for name, cfg in fvd.PRESETS.items():
        registry.add(name, fvd.FVD, config=cfg, description=f"FVD preset {name} (see docs/evaluators.md)",
                     aliases=aliases.get(name, ()))
    for name, cfg in fid.PRESETS.items():
        registry.add(name, fid.FID, config=cfg, description=f"FID preset {name} (see docs/evaluators.md)")
    registry.add("psnr", ReconMetric, config=PSNRConfig, description="per-frame PSNR against ground truth")
    registry.add("ssim", ReconMetric, config=SSIMConfig, description="per-frame SSIM against ground truth")

    # moving-digits metrics that see time (docs/evaluators.md, "Digit metrics")
    from fvdm.plugins.evaluators.boundary_jump import BoundaryJump
    from fvdm.plugins.evaluators.digit_identity import DigitIdentity
    from fvdm.plugins.evaluators.digit_recognisability import DigitRecognisability
    from fvdm.plugins.evaluators.trajectory_error import TrajectoryError

    registry.add("digit_recognisability", DigitRecognisability,
                 description="fraction of frames in which the digits frame net confidently finds a digit")
    registry.add("digit_identity", DigitIdentity,
                 description="per-frame F1 of detected digit classes vs the given frames' (or true) digits")
    registry.add("trajectory_error", TrajectoryError,
                 description="capped px distance of detected digits from moving_digits' true positions")
    registry.add("boundary_jump", BoundaryJump,
                 description="frame change across context boundaries, fake / real (1.0 = like real)")
