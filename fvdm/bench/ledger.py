"""Per-job records of a benchmark run: what makes every suite run resumable.

A suite names its units of work (one trained model at one seed, one evaluation of it, one speed module)
and runs each through ``ledger.run(job, fn)``. The ledger writes a record into the run directory as each
job finishes, so a run that is killed, preempted or stopped by ``--max-minutes`` continues where it was
when the same command runs again: finished jobs are read back, not redone.

    DIR/run.json          what the records belong to: the suite, quick, the base seed, the suite's
                          config and its sha256, and the records' format. Written when a fresh run starts;
                          a later run with another suite, config, budget or seed is refused, naming the
                          field that differs (``--fresh`` deletes the records and starts over).
    DIR/records/<job>.json one per finished job, written atomically (temp file, fsync, rename): the job id,
                          kind, seed, the run's config sha256, the fvdm version and git revision that ran
                          it, its seconds, its result and the sha256 of that result. A torn, truncated or
                          edited record fails the check; its job runs again and the run says so.

A job that was cut off leaves no record; the suite restarts it (training resumes from its own last
checkpoint in ``ledger.workdir(job)``; an evaluation starts again). A ledger without a directory
(``Ledger.in_memory()``) runs every job and keeps nothing: what a script that calls ``suite.run`` directly
gets.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from fvdm.core.errors import FvdmError
from fvdm.core.atomic import atomic_write

#: Version of the run.json / record layout; records of another format are refused, not mixed.
LEDGER_FORMAT = 1


class LedgerError(FvdmError, ValueError):
    """DIR holds records that do not belong to this run; the message names the difference and the fix."""


class SliceEnd(Exception):
    """Raised by ``Ledger.run`` after a job finished once ``--max-minutes`` has passed and jobs remain."""


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _safe(job: str) -> str:
    """A job id as a file name: ``train/ptss/s0`` -> ``train__ptss__s0``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job.replace("/", "__"))


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(dotted field, old value, new value) of the first place two JSON values differ, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            d = _first_difference(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{path}.{k}" if path else k)
            if d is not None:
                return d
        return None
    return None if old == new else (path or "<root>", old, new)


def write_atomic_json(obj: Any, path: Path, *, crash: str | None = None) -> None:
    """JSON to ``path`` atomically and durably (``fvdm.core.atomic``); the temp file ends in ``.tmp`` so no
    reader of ``*.json`` takes it for a record. ``crash``: a crash point before the rename (tests)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1) + "\n"), durable=True,
                 temp=path.with_name(f".{path.name}.{os.getpid()}.tmp"), crash=crash)


class Ledger:
    """The records of one suite run in ``out`` (None: keep nothing, run everything)."""

    def __init__(self, out: str | Path | None, *, suite: str, config: dict[str, Any], quick: bool, seed: int,
                 fresh: bool = False, max_minutes: float | None = None, log: Callable[[str], None] | None = None):
        self.out = Path(out) if out is not None else None
        self.identity = {"format": LEDGER_FORMAT, "suite": suite, "quick": bool(quick), "seed": int(seed),
                         "config": config}
        self.config_sha256 = _sha(self.identity)
        self.max_minutes = max_minutes
        self.t0 = time.monotonic()
        self.log = log or (lambda msg: print(f"fvdm bench: {msg}", file=sys.stderr, flush=True))
        self.expected: list[str] = []
        self.on_record: Callable[[], None] | None = None  # the runner's partial report
        self.ran: list[str] = []  # jobs this invocation ran (not read back)
        self._cache: dict[str, dict[str, Any]] = {}
        self._refused: set[str] = set()  # jobs whose record failed its check (rerun; said once)
        self._git: dict[str, Any] | None = None  # this process's revision, asked of git once
        if self.out is not None:
            self._open(fresh)

    @classmethod
    def in_memory(cls) -> "Ledger":
        return cls(None, suite="", config={}, quick=False, seed=0)

    # -- the run directory ---------------------------------------------------------------
    @property
    def records_dir(self) -> Path:
        assert self.out is not None
        return self.out / "records"

    def _open(self, fresh: bool) -> None:
        assert self.out is not None
        run_json = self.out / "run.json"
        if fresh:
            # the records and every job's own files: ledger.workdir()s and the digits suites' model runs
            for p in (run_json, self.out / "jobs.json", self.records_dir, self.out / "jobs", self.out / "runs"):
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        if run_json.is_file():
            self._check_same(json.loads(run_json.read_text()))
        else:
            stray = sorted(self.records_dir.glob("*.json")) if self.records_dir.is_dir() else []
            if stray:
                raise LedgerError(f"{self.out}: {len(stray)} records but no run.json (what they belong to is "
                                  f"unknown); start over with --fresh or use another --out")
            write_atomic_json({**self.identity, "config_sha256": self.config_sha256,
                               "created_utc": _now()}, run_json)

    def _check_same(self, old: dict[str, Any]) -> None:
        where = f"{self.out} holds records"
        fix = "run with the same settings to continue them, use another --out, or add --fresh to start over"
        if old.get("format") != LEDGER_FORMAT:
            raise LedgerError(f"{where} in format {old.get('format')} from another fvdm (this one writes "
                              f"{LEDGER_FORMAT}); use another --out, or --fresh to start over")
        if old.get("suite") != self.identity["suite"]:
            raise LedgerError(f"{where} of suite {old.get('suite')!r}, not {self.identity['suite']!r}; use "
                              f"another --out, or --fresh to start over")
        mine = {k: v for k, v in self.identity.items() if k != "format"}
        diff = _first_difference({k: old.get(k) for k in mine}, mine)
        if diff is not None:
            field, was, now = diff
            label = {"quick": "--quick", "seed": "--seed"}.get(field, f"config field {field}")
            raise LedgerError(f"{where} made with {label}={json.dumps(was)}; this run has {json.dumps(now)}: {fix}")

    def workdir(self, job: str) -> Path:
        """Where job ``job`` keeps its own files (checkpoints): DIR/jobs/<job>."""
        base = self.out if self.out is not None else Path("bench_out") / "_scratch"
        return base / "jobs" / _safe(job)

    # -- records ---------------------------------------------------------------------------
    def expect(self, jobs: Iterable[str]) -> None:
        """Declare every job of the run (for ``k of n`` and ``fvdm bench status``)."""
        self.expected = list(dict.fromkeys(jobs))
        if self.out is not None:
            write_atomic_json({"jobs": self.expected}, self.out / "jobs.json")

    def record(self, job: str) -> dict[str, Any] | None:
        """The finished record of ``job``, or None (never run, cut off, or unreadable: then it is said)."""
        if job in self._cache:
            return self._cache[job]
        if self.out is None:
            return None
        path = self.records_dir / f"{_safe(job)}.json"
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text())
            ok = (isinstance(rec, dict) and rec.get("job") == job and rec.get("config_sha256") == self.config_sha256
                  and rec.get("result_sha256") == _sha(rec.get("result")))
        except (OSError, ValueError) as exc:
            ok, rec = False, {"error": str(exc)}
        if not ok:
            if job not in self._refused:  # said once, however often progress and reports look the job up
                self._refused.add(job)
                self.log(f"record of job {job} is unreadable or does not match this run ({path.name}): running "
                         "the job again")
            return None
        self._cache[job] = rec
        return rec

    def result(self, job: str) -> Any | None:
        rec = self.record(job)
        return None if rec is None else rec["result"]

    def put(self, job: str, result: Any, *, seed: int | None = None, seconds: float = 0.0) -> None:
        """Record ``job`` as finished with ``result`` (JSON-able), atomically; then the partial report.

        A job id starts with its kind (``train/...``, ``eval/...``): ``fvdm bench status`` estimates a
        pending job's time from the finished jobs of its kind."""
        import fvdm
        from fvdm.bench.provenance import git_revision, to_jsonable

        result = to_jsonable(result)
        if self._git is None:
            self._git = git_revision()
        rec = {"format": LEDGER_FORMAT, "job": job, "kind": kind_of(job), "seed": seed,
               "config_sha256": self.config_sha256,
               "fvdm_version": fvdm.__version__, "git": self._git, "seconds": round(float(seconds), 3),
               "finished_utc": _now(), "result": result, "result_sha256": _sha(result)}
        if self.out is not None:
            write_atomic_json(rec, self.records_dir / f"{_safe(job)}.json", crash=f"record/{job}")
        self._cache[job] = rec
        self.ran.append(job)
        if self.on_record is not None:
            self.on_record()

    def run(self, job: str, fn: Callable[[], Any], *, seed: int | None = None,
            valid: Callable[[Any], bool] | None = None) -> Any:
        """``job``'s recorded result, or ``fn()`` run, recorded and returned.

        ``valid(result)`` can reject a record whose files are gone (a checkpoint deleted since): the job
        runs again. After a job that ran, ``SliceEnd`` is raised once ``max_minutes`` have passed and
        declared jobs remain.
        """
        old = self.result(job)
        if old is not None and (valid is None or valid(old)):
            return old
        if old is not None:
            self.log(f"job {job}: its record names files that are gone; running it again")
        t0 = time.perf_counter()
        res = fn()
        self.put(job, res, seed=seed, seconds=time.perf_counter() - t0)
        self.stop_if_due()
        return self.result(job)

    # -- slices ---------------------------------------------------------------------------
    @property
    def minutes(self) -> float:
        return (time.monotonic() - self.t0) / 60

    @property
    def stop_due(self) -> bool:
        return self.max_minutes is not None and self.minutes >= self.max_minutes

    def pending(self) -> list[str]:
        return [j for j in self.expected if self.record(j) is None]

    def stop_if_due(self) -> None:
        if self.stop_due and (self.pending() or not self.expected):
            raise SliceEnd(f"--max-minutes {self.max_minutes:g} reached after {self.minutes:.1f} min")

    def progress(self) -> tuple[int, int]:
        """(finished, declared) jobs."""
        n = len(self.expected)
        return (n - len(self.pending()) if n else len(self._cache)), n


def kind_of(job: str) -> str:
    """``train/ptss/s0`` -> ``train``."""
    return job.split("/", 1)[0]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def status(out: str | Path) -> dict[str, Any]:
    """What a run directory holds: done and pending jobs, seconds spent, and an estimate of the time left
    from the finished jobs' own timings (per kind: a pending job is assumed to take its kind's mean)."""
    out = Path(out)
    run_json = out / "run.json"
    if not run_json.is_file():
        raise LedgerError(f"{out} holds no benchmark run (no run.json); start one with fvdm bench run SUITE "
                          f"--out {out}")
    ident = json.loads(run_json.read_text())
    expected = json.loads((out / "jobs.json").read_text())["jobs"] if (out / "jobs.json").is_file() else []
    done: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "records").glob("*.json")) if (out / "records").is_dir() else []:
        try:
            rec = json.loads(path.read_text())
            if rec.get("config_sha256") == ident.get("config_sha256") and rec.get("result_sha256") == _sha(
                    rec.get("result")):
                done[rec["job"]] = rec
        except (OSError, ValueError, KeyError):
            continue  # unreadable: counted as pending, rerun by the next run
    pending = [j for j in expected if j not in done]
    by_kind: dict[str, list[float]] = {}
    for rec in done.values():
        by_kind.setdefault(rec.get("kind", "job"), []).append(float(rec.get("seconds", 0.0)))
    every = [s for v in by_kind.values() for s in v]

    left = 0.0
    for j in pending:
        times = by_kind.get(kind_of(j)) or every
        left += sum(times) / len(times) if times else float("nan")
    return {"dir": str(out), "suite": ident.get("suite"), "quick": ident.get("quick"), "seed": ident.get("seed"),
            "config_sha256": ident.get("config_sha256"), "done": sorted(done), "pending": pending,
            "seconds_done": round(sum(every), 1), "seconds_left_estimate": None if left != left else round(left, 1),
            "jobs": {j: {"kind": r.get("kind"), "seed": r.get("seed"), "seconds": r.get("seconds"),
                         "revision": (r.get("git") or {}).get("revision"), "finished_utc": r.get("finished_utc")}
                     for j, r in done.items()}}
