"""One source per default: every defaulted key of the schema is the default of the library code that uses it.

The test walks the schema, so a key added with a default fails here until it is given a counterpart (a
function or class parameter whose default must equal the schema's) or an exemption that says why it has none.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from layerfuse import (backbones, evaluate, extract, finetune, fusion, images, label_shift, reduce, report, select,
                       self_training, stages, svm, synthetic, tca)

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[2] / "schemas/config.schema.yaml").read_text())


def defaulted_keys(node=SCHEMA, path=()) -> dict[str, object]:
    """``{dotted key: default}`` of every key with a default (``*``: any entry of a mapping; ``$defs`` by name)."""
    out = {}
    if not isinstance(node, dict):
        return out
    if "default" in node and path:
        out[".".join(path)] = node["default"]
    for key, sub in (node.get("properties") or {}).items():
        out.update(defaulted_keys(sub, path + (key,)))
    if isinstance(node.get("additionalProperties"), dict):
        out.update(defaulted_keys(node["additionalProperties"], path + ("*",)))
    for name, sub in (node.get("$defs") or {}).items():
        out.update(defaulted_keys(sub, ("$defs", name)))
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(key) or []:
            out.update(defaulted_keys(sub, path))
    return out


def _finetune(name):
    return lambda: {f.name: f.default for f in dataclasses.fields(finetune.FinetuneConfig)}[name]


def _param(fn, name):
    return lambda: inspect.signature(fn).parameters[name].default


# schema key -> the library parameters that must default to the schema's value
COUNTERPARTS = {
    "image_size": [_param(backbones.list_layers, "image_size"), _param(synthetic.make_demo_dataset, "size")],
    "max_file_mb": [_param(images.prepare_domain, "max_file_mb"), _param(images.build_domain, "max_file_mb")],
    **{f"backbones.*.finetune.{k}": [_finetune(k)] for k in ("trainable", "epochs", "batch_size", "lr", "momentum",
                                                               "weight_decay", "schedule", "bn", "precision", "seed",
                                                               "target_loss", "target_weight", "mcc_temperature")},
    "backbones.*.maxpool_pad": [_param(backbones.BackboneSpec, "maxpool_pad")],
    "global_layer": [_param(report.paper_table, "global_layer"), _param(stages.aggregate_scores, "global_layer"),
                     _param(stages.finetune_backbone, "global_layer"), _param(report.tables_markdown, "global_layer")],
    **{f"extract.{k}": [_param(extract.extract_features, k)] for k in ("batch_size", "precision", "local_dtype",
                                                                        "compression", "device")},
    "extract.compile": [_param(extract.extract_features, "compile_model")],
    "fusion.scaling": [_param(fusion.fuse, "scaling")],
    **{f"tca.{k}": [_param(tca.TCA, k), _param(tca.JDA, k)] for k in ("kernel", "gamma", "bandwidth_factor", "mu",
                                                                       "solver", "n_landmarks", "auto_threshold")},
    **{f"svm.{k}": [_param(svm.make_svm, k), _param(svm.LinearSVM, k)] for k in ("C", "class_weight", "tol",
                                                                                   "max_iter", "solver")},
    "svm.center": [_param(evaluate.center_domains, "center"), _param(evaluate.evaluate_svm, "center"),
                   _param(stages.aggregate_scores, "center"), _param(report.tables_markdown, "center")],
    "selection.criteria": [lambda: list(inspect.signature(select.criteria_scores).parameters["criteria"].default)],
    "selection.default": [_param(select.selection_table, "default")],
    "selection.scope": [_param(select.selection_table, "scope")],
    **{f"selection.{k}": [_param(select.criteria_scores, k)] for k in ("validation_size", "seed",
                                                                        "max_target_images")},
    "selection.max_source_images": [_param(select.criteria_scores, "max_source_images"),
                                    _param(label_shift.estimate_target_priors, "max_source_images")],
    "selection.combine.method": [_param(select.combined_decision, "method"), _param(select.vote_weights, "method")],
    "selection.combine.members": [_param(select.combined_decision, "members"),
                                  _param(select.scoring_settings, "vote_members")],
    **{f"selection.refine.{k}": [_param(self_training.SelfTrainingSVM, k)] for k in ("rounds", "final_share",
                                                                                       "balance")},
    **{f"$defs.experiment.synthetic.{k}": [_param(synthetic.make_demo_dataset, k)]
       for k in ("n_classes", "n_source", "n_target", "seed")},
    "$defs.experiment.split.test_size": [_param(images.split_rows, "test_size")],
    "$defs.experiment.split.seed": [_param(images.split_rows, "seed")],
    "$defs.experiment.classes": [_param(images.resolve_classes, "keep")],
}

# schema key -> why no library parameter carries it (each a plan of the workflow, not a value a function takes)
EXEMPT = {
    # sections: each of their keys is checked on its own
    "extract": "a section", "fusion": "a section", "tca": "a section", "svm": "a section", "selection": "a section",
    "adapters": "a section: no adapter beyond TCA unless configured",
    "selection.refine": "a section",
    "selection.combine": "a section",
    "selection.refine.method": "whether the workflow refines its pick (a plan: score_grid refines where told to)",
    # what the workflow builds: which networks, layers, grid rows and jobs
    "backbones": "the demo's two backbones: which networks a run builds",
    "layers": "graph node names the run extracts; the library takes any node (list-layers)",
    "local_layers": "which layers are fused: the grid's columns",
    "tca.dims": "the grid's TCA rows (the paper's Tables I-IV); TCA takes one n_components per fit",
    "tca.baseline": "whether the grid has the no-adapter row",
    "extract.one_pass": "how extraction jobs are cut (rules only)",
    "extract.store_maps": "which stores extraction jobs write (rules only; resolved by config.resolve_store_maps)",
    "extract.pca_sample": "how many source images the sample pass reads (rules only)",
    "extract.pca_in_pass": "how extraction jobs use their memory (rules only; resolved by config.resolve_pca_in_pass)",
    "extract.shard_size": "how extraction jobs are cut (rules only)",
    "$defs.domain.labels": "read from a validated domain entry (images.DomainSpec.from_config)",
    "$defs.domain.class_map": "an empty map: folders are classes",
}


def test_every_defaulted_schema_key_has_a_counterpart_or_a_reason():
    keys = set(defaulted_keys())
    assert len(keys) > 60                                   # the walk reaches the nested sections
    missing = sorted(keys - set(COUNTERPARTS) - set(EXEMPT) - {"reducers"})
    assert not missing, f"schema keys with a default but no library counterpart or exemption: {missing}"
    stale = sorted((set(COUNTERPARTS) | set(EXEMPT)) - keys)
    assert not stale, f"listed here but not defaulted in the schema: {stale}"


@pytest.mark.parametrize("key", sorted(COUNTERPARTS))
def test_schema_default_is_the_librarys(key):
    expected = defaulted_keys()[key]
    for counterpart in COUNTERPARTS[key]:
        assert counterpart() == expected, (key, counterpart())


def test_default_reducers_use_the_reducers_defaults():
    """The schema's default ``reducers`` entries name the values their functions default to."""
    entries = defaulted_keys()["reducers"]
    assert entries["pca"]["n_components"] == reduce.PCA_COMPONENTS == _param(reduce.GramPCA, "n_components")()
    assert entries["flatten"]["segment"] == _param(reduce.flatten_pool, "segment")()
    assert set(entries["pool2d"]) == {"method"} and _param(reduce.pool2d, "region")() is None
