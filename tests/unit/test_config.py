"""The config schema, the presets and the semantic checks."""
from pathlib import Path

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerfuse.config import ConfigError, adapters, check_config, check_data_sizes, featuresets, validate_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
PRESETS = sorted((REPO / "config/presets").glob("*.yaml"))


def _validated(cfg):
    """Validate and fill defaults (what rules/common.smk does)."""
    return validate_config(cfg, REPO / "schemas/config.schema.yaml")


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


@pytest.mark.parametrize("experiment,extract,stored", [
    ({"synthetic": {}}, {}, False),                                   # the default: maps off the disk
    ({"source": {"path": "."}, "split": {"test_size": 0.2}}, {}, True),  # a split fits PCA on its own rows
    ({"synthetic": {}}, {"one_pass": False}, True),                   # the reducers need the one-pass extraction
    ({"synthetic": {}}, {"store_maps": "true"}, True),               # as --config extract='{store_maps: true}' gives it
    ({"synthetic": {}}, {"store_maps": False}, False),
])
def test_store_maps_auto_keeps_maps_only_where_they_are_needed(experiment, extract, stored, tmp_path, monkeypatch):
    from layerfuse.config import resolve_store_maps

    monkeypatch.chdir(tmp_path)
    cfg = _validated({"experiments": {"x": experiment}, "extract": extract})
    check_config(cfg)
    assert resolve_store_maps(cfg) is stored and cfg["extract"]["store_maps"] is stored


@pytest.mark.parametrize("bad", [
    {"experiments": {"x": {"synthetic": {}}}, "svm": {"C": 0}},
    {"experiments": {"x": {"synthetic": {}}}, "svm": {"center": "target"}},
    {"experiments": {"x": {"synthetic": {}}}, "unknown_key": 1},
    {"experiments": {"X Y": {"synthetic": {}}}},
    {"experiments": {"x": {"synthetic": {}, "split": {}}}},
    {"experiments": {"x": {"synthetic": {}}}, "tca": {"dims": []}, "reducers": {"p": {"method": "svd"}}},
    {"experiments": {"x": {"synthetic": {}}}, "adapters": {"c": {"method": "mmd"}}},
])
def test_schema_rejects(bad):
    with pytest.raises(ConfigError) as exc:
        _validated(bad)
    assert "\n" not in str(exc.value) and ": " in str(exc.value)


def test_defaults_match_snakemake_validate():
    """Our validator fills the same defaults as snakemake.utils.validate."""
    from snakemake.utils import validate

    ours = _validated({"experiments": {"x": {"synthetic": {}}}})
    theirs = {"experiments": {"x": {"synthetic": {}}}}
    validate(theirs, str(REPO / "schemas/config.schema.yaml"))
    assert ours == theirs


@pytest.mark.parametrize("change,match", [
    ({"global_layer": "nope"}, "global_layer"),
    ({"local_layers": ["global"]}, "is the global layer"),
    ({"backbones": {"a": {"finetune": {"base": "zzz"}}}}, "finetune.base"),
    ({"backbones": {"a": {"weights": "foo"}}}, "is not keras-npm"),
    ({"adapters": {"c": {"method": "coral", "alpha": 1}}},
     r"^adapters.c.alpha: coral takes no such parameter; valid: assume_centered, max_features, reg$"),
    ({"adapters": {"tca": {"method": "coral"}}}, r"^adapters.tca: the name is taken"),
    ({"adapters": {"j": {"method": "jda", "alpha": 1}}}, r"^adapters.j.alpha: jda takes no such parameter; valid: C, "),
])
def test_semantic_errors_name_the_key(change, match):
    cfg = _validated({"experiments": {"x": {"synthetic": {}}}, **change})
    with pytest.raises(ValueError, match=match):
        check_config(cfg)


def _tiny(**extra):
    return _validated({"experiments": {"x": {"synthetic": {"n_classes": 3, "n_source": 5, "n_target": 4}}},
                       "reducers": {"pca": {"method": "pca", "n_components": 8}}, "tca": {"dims": [6]}, **extra})


@pytest.mark.parametrize("change,match", [
    ({"tca": {"dims": [28]}}, r"tca.dims: 28 components exceed the 27 images of experiment 'x'"),
    ({"reducers": {"p": {"method": "pca", "n_components": 15}}}, r"reducers.p.n_components: 15 .* at most 14"),
])
def test_sizes_the_data_cannot_support(change, match):
    cfg = _tiny(**change)
    with pytest.raises(ConfigError, match=match):
        check_data_sizes(cfg)


def test_data_checks_on_folders(tmp_path):
    """Domains sharing no class and a class map naming a missing folder stop the run, naming the experiment."""
    for side, classes in (("s", ["cat", "dog"]), ("t", ["car"])):
        for c in classes:
            (tmp_path / side / c).mkdir(parents=True)
            (tmp_path / side / c / "a.png").write_bytes(b"x")
    cfg = _validated({"experiments": {"e": {"source": {"path": str(tmp_path / "s")},
                                            "target": {"path": str(tmp_path / "t")}}}, "tca": {"dims": [1]},
                      "reducers": {}})
    with pytest.raises(ConfigError, match=r"^experiments.e: source .* share no class"):
        check_data_sizes(cfg)
    cfg["experiments"]["e"]["target"]["class_map"] = {"cow": "cat"}
    with pytest.raises(ConfigError, match=r"^experiments.e: class_map names folder 'cow'"):
        check_data_sizes(cfg)
    cfg["experiments"]["e"]["target"]["class_map"] = {"car": "cat"}
    with pytest.raises(ConfigError, match=r"^experiments.e: only one class \('cat'\) is used"):
        check_data_sizes(cfg)                      # one-class experiments stop before any job
    (tmp_path / "t" / "dog").mkdir()
    (tmp_path / "t" / "dog" / "b.png").write_bytes(b"x")
    check_data_sizes(cfg)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
_keys = st.sampled_from(["experiments", "image_size", "backbones", "layers", "global_layer", "local_layers",
                         "extract", "reducers", "fusion", "tca", "svm", "tca.dims", "tca.mu", "svm.C",
                         "reducers.pca.n_components", "experiments.x", "experiments.x.synthetic.n_classes",
                         "backbones.imagenet.weights", "backbones.finetuned.finetune", "layers.block1",
                         "experiments.x.split", "nonsense"])


@pytest.mark.slow                      # 300 generated configs: the full suite's
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(_keys, _json), min_size=1, max_size=4))
def test_random_configs_never_traceback(edits):
    """Any config either validates or raises ConfigError with one line naming a key: never another exception."""
    cfg = copy.deepcopy(yaml.safe_load((REPO / "tests/workflow/config.yaml").read_text()))
    cfg["experiments"]["x"] = cfg["experiments"].pop("tiny")
    for dotted, value in edits:
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            nxt = node.get(p) if isinstance(node, dict) else None
            if not isinstance(nxt, dict):
                nxt = node[p] = {} if isinstance(node, dict) else None
            node = nxt
        if isinstance(node, dict):
            node[leaf] = value
    try:
        validate_config(cfg, REPO / "schemas/config.schema.yaml")
        check_config(cfg)
        check_data_sizes(cfg)
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and len(msg) <= 240 and ": " in msg


def test_command_line_strings_are_coerced_by_the_schema():
    """``--config svm='{C: 0.1}'`` reaches the config as ``{"C": "0.1"}``: numbers, lists, null and
    booleans are parsed where the schema wants them; strings the schema allows stay strings."""
    cfg = _validated({"experiments": {"x": {"synthetic": {"n_source": "12"}}},
                      "svm": {"C": "0.1", "class_weight": "null", "center": "none"},
                      "tca": {"dims": "[128, 64]", "gamma": "0.5", "baseline": "false"},
                      "selection": {"criteria": ["snd", "entropy"], "default": "snd"}})
    assert cfg["svm"]["C"] == 0.1 and cfg["svm"]["class_weight"] is None and cfg["svm"]["center"] == "none"
    assert cfg["tca"]["dims"] == [128, 64] and cfg["tca"]["gamma"] == 0.5 and cfg["tca"]["baseline"] is False
    assert cfg["experiments"]["x"]["synthetic"]["n_source"] == 12
    assert _validated({"experiments": {"x": {"synthetic": {}}}, "tca": {"gamma": "median"}})["tca"]["gamma"] == "median"
    with pytest.raises(ConfigError, match="svm.C: 'abc' is not of type 'number'"):
        _validated({"experiments": {"x": {"synthetic": {}}}, "svm": {"C": "abc"}})


@pytest.mark.parametrize("key, value", [("svm.C", ".nan"), ("svm.tol", ".inf"), ("tca.mu", "-.inf"),
                                        ("tca.bandwidth_factor", ".nan"), ("selection.validation_size", ".nan")])
def test_non_finite_numbers_are_refused_naming_the_key(key, value):
    """YAML's ``.nan``/``.inf`` pass JSON Schema's ``number`` (and its bounds, for NaN): each is refused before
    any job, in one line naming the key, whether from the config file or from ``--config`` (a string)."""
    section, leaf = key.split(".")
    parsed = yaml.safe_load(f"{leaf}: {value}")[leaf]
    for text in (parsed, value):
        with pytest.raises(ConfigError) as err:
            _validated({"experiments": {"x": {"synthetic": {}}}, section: {leaf: text}})
        assert str(err.value) == f"{key}: must be a finite number, got {parsed}"


@pytest.mark.parametrize("args, message", [
    (["predict", "x", "--model", "m", "-o", "o.csv", "--batch-size", "-3"], "--batch-size: must be 1 or more, got -3"),
    (["predict", "x", "--model", "m", "-o", "o.csv", "--threads", "-1"], "--threads: must be 1 or more, got -1"),
    (["predict", "x", "--model", "m", "-o", "o.csv", "--threads", "two"], "--threads: expected a whole number"),
    (["list-layers", "--image-size", "0"], "--image-size: must be 1 or more, got 0")])
def test_cli_numbers_are_checked_before_anything_runs(capsys, args, message):
    from layerfuse.__main__ import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_every_cli_option_says_what_it_does():
    from layerfuse.__main__ import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest}: no help text"


def test_defaults_too_large_for_the_data_are_capped_and_written_values_are_not(tmp_path):
    """cap_to_data lowers only what the user left at its default; a value written stays, for check_data_sizes."""
    from layerfuse.config import cap_to_data

    given = {"experiments": {"x": {"synthetic": {"n_classes": 3, "n_source": 5, "n_target": 4}}}}
    cfg = _validated(copy.deepcopy(given))
    notes = cap_to_data(cfg, given, results=tmp_path)
    assert cfg["tca"]["dims"] == [27] and cfg["reducers"]["pca"]["n_components"] == 14
    assert notes == ["tca.dims: the default [256, 192, 128, 96, 64] capped to [27] (experiment 'x' has 27 images, "
                     "source + target)",
                     "reducers.pca.n_components: the default 256 capped to 14 (experiment 'x' has 15 source images)"]
    check_data_sizes(cfg, results=tmp_path)                               # now within the data
    given = {**given, "tca": {"dims": [28]}, "reducers": {"p": {"method": "pca", "n_components": 15}}}
    cfg = _validated(copy.deepcopy(given))
    assert cap_to_data(cfg, given, results=tmp_path) == [] and cfg["tca"]["dims"] == [28]
    with pytest.raises(ConfigError, match="tca.dims: 28 components exceed"):
        check_data_sizes(cfg, results=tmp_path)


def test_a_mapping_that_leaves_out_default_entries_is_named():
    from layerfuse.config import dropped_defaults

    path = REPO / "schemas/config.schema.yaml"
    assert dropped_defaults({"reducers": {"pca": {"method": "pca"}}}, path) == [
        "reducers: your mapping replaces the default one and leaves out flatten, pool2d (add them to keep them)"]
    assert dropped_defaults({"backbones": {"imagenet": {}, "finetuned": {}}, "tca": {"dims": [4]}}, path) == []
    assert dropped_defaults({}, path) == []


@pytest.mark.parametrize("budget_mb, expected", [(64_000, True), (4_000, False)])
def test_pca_in_pass_auto_holds_every_block_where_memory_allows(budget_mb, expected):
    """`extract.pca_in_pass: auto`: one pass (every block's loadings held) where it fits the budget, else a pass
    per block; a value written is kept; without a fitted reducer nothing is held."""
    from layerfuse.config import pca_components_held, resolve_pca_in_pass
    from layerfuse.job_memory import extraction_pass_mb

    cfg = _validated({"experiments": {"x": {"synthetic": {}}}})
    assert cfg["extract"]["pca_in_pass"] == "auto"
    held = pca_components_held(cfg, True)
    assert held == 256 * 3 and pca_components_held(cfg, False) == 256
    assert extraction_pass_mb(224, held) == 3000 + 2352            # 3 blocks x 256 x 56² float32 values
    from layerfuse.job_memory import PASS_BUDGET_MB

    assert extraction_pass_mb(224, held) <= PASS_BUDGET_MB           # the defaults make one pass
    assert resolve_pca_in_pass(cfg, budget_mb) is expected and cfg["extract"]["pca_in_pass"] is expected
    written = _validated({"experiments": {"x": {"synthetic": {}}}, "extract": {"pca_in_pass": False}})
    assert resolve_pca_in_pass(written, 64_000) is False
    no_pca = _validated({"experiments": {"x": {"synthetic": {}}}, "reducers": {"f": {"method": "flatten"}}})
    assert resolve_pca_in_pass(no_pca, 64_000) is False and pca_components_held(no_pca, True) == 0
