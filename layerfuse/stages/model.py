"""Stages of rules/model.smk: the picked cell as a saved model."""
from __future__ import annotations


from .. import model as saved_model



def export_model(inputs: dict, params: dict, out_dir, cell: dict | None = None) -> dict:
    """The selected cell (or ``cell``) as a saved model folder: see :mod:`layerfuse.model`."""
    return saved_model.export_model(inputs, params, out_dir, cell)
