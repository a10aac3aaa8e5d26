"""Benchmark suites run by ``fvdm bench`` (speed, digits_zero_shot, dataset protocols) and their runner.

This package is the built-in plugin ``fvdm.benchmarks``: it registers its suites
through the same ``fvdm_register_benchmarks`` hook third-party packages use.
"""

from fvdm.core.hookspecs import hookimpl


@hookimpl
def fvdm_register_benchmarks(registry):
    # imports inside: suites pull in their optional deps only when they run
    from fvdm.bench.suites.digits_zero_shot import DigitsZeroShotSuite
    from fvdm.bench.suites.protocols import PROTOCOLS, ProtocolSuite
    from fvdm.bench.suites.speed import SpeedSuite

    registry.add("speed", SpeedSuite)
    registry.add("digits_zero_shot", DigitsZeroShotSuite)

    from fvdm.bench.suites.finetune_forgetting import FinetuneForgettingSuite

    registry.add("finetune_forgetting", FinetuneForgettingSuite,
                 description="fine-tune the committed synchronized digits base per arm (PTSS, independent, "
                             "task-specific i2v, control): what each forgets and gains, paired by seed")
    for name, config in PROTOCOLS.items():
        registry.add(name, ProtocolSuite, config=config,
                     description=f"StyleGAN-V FVD16/FVD128 protocol on {name} (user-supplied data and weights)")
