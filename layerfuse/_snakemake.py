"""Glue for ``workflow_scripts/``: logging to the rule's log and one-line errors."""
from __future__ import annotations

import logging
import sys

__all__ = ["run"]


def run(job) -> None:
    """Call ``job()``; a ``ValueError``/``OSError`` becomes one ``error:`` line and exit status 1."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        job()
    except (ValueError, OSError) as exc:
        msg = f"error: {exc}".splitlines()[0]
        print(msg, file=sys.stderr)
        print(msg, file=sys.__stderr__)
        sys.exit(1)
