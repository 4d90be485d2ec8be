"""One function per workflow rule: what ``workflow_scripts/*.py`` call.

Each takes plain paths and parameter dicts (the rule's ``params``), so every stage runs and is tested
without Snakemake.  The stages live in one module per ``rules/*.smk`` file and are loaded by name on first
use (``from layerfuse.stages import fuse_features`` imports ``layerfuse.stages.fuse`` only): a job imports
what its own stage needs, not scikit-learn, pandas or torch for another rule's.
"""
from __future__ import annotations

import importlib

# stage (or constant) -> the module of ``layerfuse.stages`` that defines it
STAGE_MODULES = {
    'make_demo_data': 'data',
    'prepare_images': 'data',
    'prepare_weights': 'weights',
    'finetune_backbone': 'weights',
    'extract_features': 'extract',
    'extract_shard': 'extract',
    'fit_pca': 'extract',
    'gather_shards': 'extract',
    'reduce_layer': 'reduce',
    'reduce_pool_layer': 'reduce',
    'fuse_features': 'fuse',
    'fit_adapter': 'adapt',
    'evaluate_svm': 'classify',
    'select_configuration': 'classify',
    'export_model': 'model',
    'aggregate_scores': 'report',
    'LANDING_MARK': 'report',
    'report_landing': 'report',
    'report_group': 'report',
    'dump_config': 'report',
}

__all__ = sorted(STAGE_MODULES)


def __getattr__(name: str):
    if name not in STAGE_MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{STAGE_MODULES[name]}"), name)
    globals()[name] = value                       # the next look-up is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(STAGE_MODULES))
