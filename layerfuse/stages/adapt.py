"""Stages of rules/adapt.smk: one adapter on one feature set."""
from __future__ import annotations

import json
import logging

import numpy as np

from .. import __version__, adapt
from ..h5io import read_stacked_pair, write_pair

log = logging.getLogger("layerfuse")


def fit_adapter(fused, spec: dict, out) -> None:
    """Fit one adapter (TCA at its largest dimension, or an ``adapters`` entry: :mod:`layerfuse.adapt`) on a
    fused pair and store the adapted features with the target's map (what a saved model applies).  An
    adapter that cannot be fitted writes a store with no features and the reason in attribute ``failed``:
    its cells are recorded as failed and the rest of the grid goes on."""
    X, ns, ys, yt, _ = read_stacked_pair(fused)        # the stack the adapter fits on, read in place: no copy
    attrs = {"adapter": json.dumps(spec), "layerfuse_version": __version__}
    try:
        fitted = adapt.fit_adapter(X, ns, ys, spec)
    except adapt.AdapterFailure as exc:
        log.warning("%s: %s", fused, exc)
        write_pair(out, np.zeros((ns, 0)), np.zeros((len(yt), 0)), ys, yt, {**attrs, "failed": str(exc)})
        return
    if fitted["attrs"]["map_error"]:
        log.warning("%s: %s: scored, but no candidate of the label-free pick", fused, fitted["attrs"]["map_error"])
    write_pair(out, fitted["source"], fitted["target"], ys, yt, {**attrs, **fitted["attrs"], "failed": ""},
               extra=fitted["arrays"])
