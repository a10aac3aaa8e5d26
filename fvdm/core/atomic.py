"""Writing a file or a directory atomically: readers see the old one or the new one, never a torn one.

Every writer of results, checkpoints, records, manifests and media goes through ``atomic_write``: the
content is written to a temp file beside the target (same filesystem), then renamed over it. With
``durable=True`` the file is fsynced before the rename and the directory after it, so the new file also
survives a power cut (checkpoints, benchmark records). A process killed mid-write leaves only a temp file
(hidden: a leading dot), which the next writer of the same target replaces.

``staged_directory`` stages a whole directory beside its target. The sampled files that must appear together
in a user's output folder (``fvdm.core.media.AtomicOutputs``) are staged inside that folder instead, which
is all a user may be able to write (its docstring says why).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

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


@contextlib.contextmanager
def staged_directory(dst: str | Path, *, merge: bool = False, last: str | None = None) -> Iterator[Path]:
    """A hidden folder beside ``dst`` to write a directory into; on success it becomes ``dst``, on failure it
    is removed and ``dst`` is as it was.

    ``merge=False`` (an export): an existing ``dst`` is set aside, the new one renamed into place, the old one
    removed last, so a failure at any point leaves the old directory or the new one. ``merge=True`` (data
    shards added to a folder): the files move into ``dst``, ``last`` (a manifest) after all the others, so a
    reader never finds a manifest listing files not yet there."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.is_dir() and not any(dst.iterdir()):
        dst.rmdir()
    if not dst.exists():
        os.replace(tmp, dst)
    elif merge:
        for f in sorted(tmp.iterdir(), key=lambda q: q.name == last):  # files of an earlier write are replaced
            os.replace(f, dst / f.name)
        tmp.rmdir()
    else:
        old = dst.parent / f".{dst.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(dst, old)
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.replace(old, dst)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
