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
import time
import traceback
from pathlib import Path

import yaml

__all__ = ["run", "live_jobs", "live_run_message", "runs_jobs", "report_requested", "report_outdated", "JOB_LOCKS"]

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
    f.write(json.dumps({"pid": os.getpid(), "log": log_path,
                        "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
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


def live_run_message(live: list[dict]) -> str:
    """One line naming the jobs :func:`live_jobs` found: a run is live, its pid and start time; no advice to
    stop it (it may be healthy: another Snakemake in this folder)."""
    first = live[0]
    since = f" since {first['started']}" if first.get("started") else ""
    more = f" and {len(live) - 1} more" if len(live) > 1 else ""
    return (f"error: a run is live in this folder: job pid {first['pid']}{since} (log {first['log']}){more} "
            f"is still writing its outputs; wait until it ends, then rerun (a dry run, -n, is not blocked)")


# Snakemake options that run no job (the Snakefile is parsed before Snakemake sets its mode, so it reads argv)
_NO_JOB_OPTIONS = {"--dry-run", "--dryrun", "--report", "--lint", "--list", "--list-rules", "--list-target-rules",
                   "--dag", "--rulegraph", "--filegraph", "--summary", "--detailed-summary", "--d3dag",
                   "--list-changes", "--list-code-changes", "--list-input-changes", "--list-params-changes",
                   "--lc", "--li", "--lp", "--containerize", "--print-compilation", "--unlock", "--cleanup-metadata"}


def runs_jobs(argv=None) -> bool:
    """False where this Snakemake invocation (``argv``, default ``sys.argv``) runs no job: a dry run (``-n``,
    ``-np``), a report, a listing, a graph."""
    for arg in (sys.argv if argv is None else argv)[1:]:
        name = arg.split("=", 1)[0]
        if name in _NO_JOB_OPTIONS or (name[:1] == "-" and name[1:2] != "-" and name[1:].isalpha() and "n" in name):
            return False
    return True


def report_requested(argv=None) -> bool:
    """Whether this Snakemake invocation builds the HTML report (``--report``)."""
    return any(arg.split("=", 1)[0] == "--report" for arg in (sys.argv if argv is None else argv)[1:])


def report_outdated(landing_page, config_dump, config: dict) -> str | None:
    """Why ``snakemake --report`` cannot describe this config's run yet (its landing page missing, or its config
    dump written for another config), in one line; None when the report can be built."""
    if not os.path.exists(landing_page) or not os.path.exists(config_dump):
        return (f"no finished run of this config to report ({landing_page} is missing): run snakemake with the "
                "same --configfile first, then --report")
    try:
        with open(config_dump) as f:
            dumped = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        return f"{config_dump}: cannot be read ({exc}); rerun snakemake with this config, then --report"
    if dumped != json.loads(json.dumps(config)):
        return (f"the results were made with another config than this one ({config_dump} differs): rerun snakemake "
                "with this --configfile (and --config), then --report")
    return None


def run(job) -> None:
    """Call ``job()``; an error becomes one ``error:`` line (console and log) and exit status 1.

    ``ValueError``/``OSError`` are the expected failures (bad input, disk); a
    ``MemoryError`` is reported the same way.  The traceback goes beside the
    job's log, ``<log>.traceback`` (the log itself, which Snakemake's
    ``show-failed-logs`` prints, ends with the one line).
    """
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # skada's POT loads torch as a backend on import (2 s); a job only hands POT numpy arrays
    os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
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
