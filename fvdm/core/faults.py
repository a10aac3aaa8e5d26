"""Named crash points for fault-injection tests of long jobs (training, benchmark records).

A long job calls ``crash_point(name)`` where being killed matters (a checkpoint just written, a record half
written). Nothing happens unless the environment variable ``FVDM_CRASH_AT`` holds a pattern (fnmatch) that
matches the name: then the process sends itself SIGKILL, exactly as a preempted machine or the OOM killer
would end it (no ``finally`` runs, no file is flushed). The resume tests set it in a child process and check
that the rerun reaches the numbers of a run that was never interrupted.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "FVDM_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when ``FVDM_CRASH_AT`` matches ``name`` (e.g. ``train/checkpoint/4``)."""
    want = os.environ.get(ENV)
    if want and fnmatch.fnmatchcase(name, want):
        os.kill(os.getpid(), signal.SIGKILL)
