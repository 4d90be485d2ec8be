"""Glue for ``workflow_scripts/``: logging to the rule's log, one-line errors, and a lock per running job.

Each job holds an exclusive ``flock`` on ``.snakemake/layerfuse-jobs/<id>.lock``
for as long as its process lives (the kernel drops it when the process dies,
however it dies).  When Snakemake itself is killed its jobs can live on,
still writing; :func:`live_jobs` lets the next run find them and say so
instead of starting the same jobs again beside them.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

__all__ = ["run", "live_jobs", "JOB_LOCKS"]

JOB_LOCKS = Path(".snakemake") / "layerfuse-jobs"


def _hold_job_lock(log_path: str):
    """Take this job's lock (kept open, so held until the process exits); None where locks are unsupported."""
    try:
        JOB_LOCKS.mkdir(parents=True, exist_ok=True)
        path = JOB_LOCKS / f"{hashlib.sha256(log_path.encode()).hexdigest()[:16]}.lock"
        f = open(path, "a+")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "log": log_path}) + "\n")
    f.flush()
    return f


def live_jobs(workdir: str | os.PathLike = ".") -> list[dict]:
    """``[{"pid", "log"}]`` of layerfuse jobs still running in ``workdir``; stale lock files are removed."""
    live = []
    folder = Path(workdir) / JOB_LOCKS
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        try:
            with open(path, "r+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    try:
                        live.append(json.loads(f.read() or "{}"))
                    except ValueError:
                        live.append({"pid": "?", "log": str(path)})
                    continue
                path.unlink()
        except OSError:
            continue
    return live


def run(job) -> None:
    """Call ``job()``; an error becomes one ``error:`` line (console and log) and exit status 1.

    ``ValueError``/``OSError`` are the expected failures (bad input, disk); a
    ``MemoryError`` is reported the same way.  The traceback goes beside the
    job's log, ``<log>.traceback`` (the log itself, which Snakemake's
    ``show-failed-logs`` prints, ends with the one line).
    """
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    in_job = sys.stderr is not sys.__stderr__            # the script sent stderr to the rule's log
    lock = _hold_job_lock(sys.stderr.name) if in_job else None  # noqa: F841 (held while open)
    try:
        job()
    except (ValueError, OSError, MemoryError) as exc:
        if in_job:
            try:
                with open(f"{sys.stderr.name}.traceback", "w") as f:
                    traceback.print_exc(file=f)
            except OSError:
                pass
        text = str(exc) if not isinstance(exc, MemoryError) else f"out of memory ({exc or 'MemoryError'})"
        msg = f"error: {text}".splitlines()[0]
        print(msg, file=sys.stderr)
        if in_job:
            print(msg, file=sys.__stderr__)
        sys.exit(1)
