"""Writing a file atomically: readers see the old file or the new one, never a torn one.

Every writer of results, checkpoints, records, manifests and media goes through ``atomic_write``: the
content is written to a temp file beside the target (same filesystem), then renamed over it. With
``durable=True`` the file is fsynced before the rename and the directory after it, so the new file also
survives a power cut (checkpoints, benchmark records). A process killed mid-write leaves only a temp file
(hidden: a leading dot), which the next writer of the same target replaces.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from fvdm.core.faults import crash_point


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask alone must set one to
    read it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where the filesystem cannot fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # the rename is still atomic
        pass


def atomic_write(path: str | Path, write: Callable[[Path], None], *, durable: bool = False,
                 temp: str | Path | None = None, crash: str | None = None) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temp file beside it, then rename it over ``path``.

    ``durable``: fsync the file before the rename and the directory after it. ``temp``: the temp file's
    name when a reader must recognise it (checkpoints: ``.<name>.tmp-<PID>``); by default a fresh hidden
    name with the mode any file the user creates gets. ``crash``: a crash point between writing and
    renaming (fault-injection tests, ``fvdm.core.faults``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if temp is None:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        # mkstemp creates the file 0600 (private temp files); the output gets the mode open() would give it
        os.chmod(name, 0o666 & ~current_umask())
        tmp = Path(name)
    else:
        tmp = Path(temp)
        tmp.unlink(missing_ok=True)
    try:
        write(tmp)
        if crash:
            crash_point(crash)  # killed here: the temp file is left, the target is untouched
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path
