"""The config schema, the presets and the semantic checks."""
from pathlib import Path

import jsonschema
import pytest
import yaml

from layerfuse.config import adapters, check_config, featuresets

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
PRESETS = sorted((REPO / "config/presets").glob("*.yaml"))


def _validated(cfg):
    """Validate and fill defaults the way snakemake.utils.validate does."""
    from snakemake.utils import validate

    validate(cfg, str(REPO / "schemas/config.schema.yaml"))
    return cfg


@pytest.mark.parametrize("path", [REPO / "config.yaml", REPO / "tests/workflow/config.yaml"] + PRESETS,
                         ids=lambda p: p.name)
def test_configs_are_valid(path):
    cfg = _validated(yaml.safe_load(path.read_text()))
    assert cfg["tca"]["bandwidth_factor"] > 0 and "svm" in cfg


def test_defaults_fill_the_grid():
    cfg = _validated({"experiments": {"x": {"synthetic": {}}}})
    assert featuresets(cfg)[:2] == ["global", "block1-pca"] and len(featuresets(cfg)) == 10
    assert adapters(cfg) == ["none", "tca-256", "tca-192", "tca-128", "tca-96", "tca-64"]
    assert set(cfg["backbones"]) == {"imagenet", "finetuned"}
    check_config(cfg)


@pytest.mark.parametrize("bad", [
    {"experiments": {"x": {"synthetic": {}}}, "svm": {"C": 0}},
    {"experiments": {"x": {"synthetic": {}}}, "unknown_key": 1},
    {"experiments": {"X Y": {"synthetic": {}}}},
    {"experiments": {"x": {"synthetic": {}, "split": {}}}},
    {"experiments": {"x": {"synthetic": {}}}, "tca": {"dims": []}, "reducers": {"p": {"method": "svd"}}},
])
def test_schema_rejects(bad):
    from snakemake.exceptions import WorkflowError

    with pytest.raises((WorkflowError, jsonschema.ValidationError)):
        _validated(bad)


@pytest.mark.parametrize("change,match", [
    ({"global_layer": "nope"}, "global_layer"),
    ({"local_layers": ["global"]}, "is the global layer"),
    ({"backbones": {"a": {"finetune": {"base": "zzz"}}}}, "finetune.base"),
    ({"backbones": {"a": {"weights": "foo"}}}, "is not keras-npm"),
])
def test_semantic_errors_name_the_key(change, match):
    cfg = _validated({"experiments": {"x": {"synthetic": {}}}, **change})
    with pytest.raises(ValueError, match=match):
        check_config(cfg)
