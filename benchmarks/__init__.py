"""Stand-alone benchmark scripts (``python -m benchmarks.<name>`` from a source checkout).

Not part of the installed package: the registered benchmark suites and their runner
live in ``fvdm.bench``. Each script here has a ``run(quick, threads) -> dict`` that
the ``speed`` suite calls, and a command line of its own.
"""
