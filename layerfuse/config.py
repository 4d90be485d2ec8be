"""Checks the JSON schema cannot express, and the plan derived from a validated config."""
from __future__ import annotations

import copy
import functools
import math
import os
from pathlib import Path

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from .adapt import check_adapter, grid_cells
from .images import DomainSpec, read_manifest, resolve_classes, scan_folder
from .job_memory import extraction_pass_mb
from .reduce import PCA_COMPONENTS, check_reducer, is_fitted

__all__ = ["ConfigError", "load_schema", "validate_config", "check_config", "check_data_sizes", "cap_to_data",
           "dropped_defaults", "check_output_folders", "resolve_pca_in_pass", "pca_components_held", "featuresets",
           "adapters", "backbone_spec", "domain_specs", "experiment_classes", "check_duplicate_keys", "node_is_frozen"]


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming the key."""


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


_JSON_TYPES = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
               "array": lambda v: isinstance(v, list), "object": lambda v: isinstance(v, dict),
               "string": lambda v: isinstance(v, str)}


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema if isinstance(schema, dict) else {}


def _branches(schema: dict, root: dict) -> list[dict]:
    """The schema and the alternatives of its ``oneOf``/``anyOf``, references resolved."""
    schema = _resolve(schema, root)
    out = [schema]
    for key in ("oneOf", "anyOf"):
        for sub in schema.get(key, []):
            out += _branches(sub, root)
    return out


def coerce_strings(value, schema: dict, root: dict):
    """Values of ``--config`` overrides that Snakemake passes as strings inside mappings
    (``svm='{C: 0.1}'`` gives ``C: '0.1'``) parsed as YAML where the schema wants a non-string there.
    Mappings and lists are coerced in place; returns the (possibly new) value."""
    branches = _branches(schema, root)
    if isinstance(value, str):
        allowed = {t for b in branches for t in ([b["type"]] if isinstance(b.get("type"), str) else b.get("type", []))}
        literal = any(value == b.get("const") or value in b.get("enum", []) for b in branches)
        if literal or "string" in allowed or not (allowed or any("enum" in b for b in branches)):
            return value
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        fits = any(_JSON_TYPES[t](parsed) for t in allowed) or any(parsed in b.get("enum", []) for b in branches)
        return coerce_strings(parsed, schema, root) if fits and not isinstance(parsed, str) else value
    if isinstance(value, dict):
        for key in value:
            for b in branches:
                sub = b.get("properties", {}).get(key, b.get("additionalProperties"))
                if isinstance(sub, dict):
                    value[key] = coerce_strings(value[key], sub, root)
                    break
    elif isinstance(value, list):
        for b in branches:
            if isinstance(b.get("items"), dict):
                value[:] = [coerce_strings(v, b["items"], root) for v in value]
                break
    return value


def load_schema(schema_path) -> dict:
    """The parsed schema file, read once per content of the file (parsing it in pure Python took 40 ms, on
    every Snakemake parse and every config a test checks).  Callers must not change it."""
    path = Path(schema_path)
    return _parsed_schema(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _parsed_schema(path: str, mtime_ns: int) -> dict:
    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validate_config(config: dict, schema_path) -> dict:
    """Validate ``config`` against the JSON schema, filling defaults in place (as snakemake's ``validate``).

    Raises :class:`ConfigError` with one line ``<dotted.key>: <problem>``, the
    most relevant of all violations (``jsonschema.exceptions.best_match``).
    """
    schema = load_schema(schema_path)
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if isinstance(prop, dict) and "default" in prop:
                    instance.setdefault(key, copy.deepcopy(prop["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    validator = jsonschema.validators.extend(base, {"properties": set_defaults})(schema)
    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(config).__name__}")
    coerce_strings(config, schema, schema)
    _refuse_non_finite(config)
    error = best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "config"
        message = error.message
        if error.validator == "oneOf" and all("required" in b for b in error.validator_value):
            message = "needs exactly one of: " + " | ".join("+".join(b["required"]) for b in error.validator_value)
        raise ConfigError(_one_line(f"{where}: {message}"))
    return config

def _refuse_non_finite(node, path=()) -> None:
    """JSON Schema's ``number`` takes YAML's ``.nan`` and ``.inf``; no key of ours means either, and a job
    would fail on one minutes later: refused here, naming the key."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(_one_line(f"{'.'.join(map(str, path)) or 'config'}: must be a finite number, got {node}"))
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        _refuse_non_finite(value, path + (key,))


TORCHVISION_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")


def featuresets(config: dict) -> list[str]:
    """``global`` plus ``<layer>-<reducer>`` for every local layer and reducer."""
    return [config["global_layer"]] + [f"{layer}-{red}" for layer in config["local_layers"]
                                       for red in config["reducers"]]


def adapters(config: dict) -> list[str]:
    """The grid's adapter cells (:func:`layerfuse.adapt.grid_cells`)."""
    return grid_cells(config["tca"], config["adapters"])


def backbone_spec(backbone: dict) -> dict:
    """Architecture/preprocessing defaults that follow from the weights' origin."""
    keras = backbone.get("weights") == "keras-npm"
    return {
        "architecture": backbone.get("architecture", "keras" if keras else "torchvision"),
        "preprocessing": backbone.get("preprocessing", "caffe" if keras else "torch"),
        "maxpool_pad": backbone.get("maxpool_pad", False),
    }


def domain_specs(experiment: dict, data_dir: str) -> dict:
    """{"source"|"target": {"path", "class_map"}} with synthetic folders resolved to ``data_dir``."""
    if "synthetic" in experiment:
        return {d: {"path": str(Path(data_dir) / d), "class_map": {}} for d in ("source", "target")}
    out = {"source": experiment["source"]}
    if "target" in experiment:
        out["target"] = experiment["target"]
    return out


def check_config(config: dict) -> None:
    """Raise ``ConfigError`` naming the key and the fix for what the schema cannot check."""
    layers = config["layers"]
    if config["global_layer"] not in layers:
        raise ConfigError(f"global_layer: {config['global_layer']!r} is not a key of layers "
                         f"({', '.join(layers)}); add it to layers")
    for layer in config["local_layers"]:
        if layer not in layers:
            raise ConfigError(f"local_layers: {layer!r} is not a key of layers ({', '.join(layers)})")
        if layer == config["global_layer"]:
            raise ConfigError(f"local_layers: {layer!r} is the global layer; list only local layers")
    for name, b in config["backbones"].items():
        if "finetune" in b:
            base = b["finetune"]["base"]
            if base not in config["backbones"] or "finetune" in config["backbones"][base]:
                raise ConfigError(f"backbones.{name}.finetune.base: {base!r} must name a backbone with weights "
                                 f"({', '.join(k for k, v in config['backbones'].items() if 'weights' in v)})")
            continue
        w = b["weights"]
        if w not in ("keras-npm",) + TORCHVISION_WEIGHTS and not w.endswith((".pth", ".pt")):
            raise ConfigError(f"backbones.{name}.weights: {w!r} is not keras-npm, "
                             f"{' or '.join(TORCHVISION_WEIGHTS)}, or a path to a .pth file")
        if w.endswith((".pth", ".pt")) and Path(w).is_dir():
            raise ConfigError(f"backbones.{name}.weights: {w} is a folder, not a .pth file")
        if w.endswith((".pth", ".pt")) and not Path(w).is_file():
            raise ConfigError(f"backbones.{name}.weights: file {w} not found")
    ex = config["extract"]
    if ex.get("shard_size") is not None:
        size, batch = ex["shard_size"], ex["batch_size"]
        if size % batch:
            raise ConfigError(f"extract.shard_size: {size} is not a multiple of extract.batch_size {batch} (a shard "
                              f"starts on a batch); use {max(batch, size // batch * batch)} or {-(-size // batch) * batch}")
        if not ex["one_pass"]:
            raise ConfigError("extract.shard_size: shards split the one-pass extraction; set extract.one_pass: true "
                              "or remove shard_size")
    if ex["store_maps"] is False:
        if not ex["one_pass"]:
            raise ConfigError("extract.store_maps: false reduces the maps inside the one-pass extraction; set "
                              "extract.one_pass: true or store_maps: true")
        split = [k for k, v in config["experiments"].items() if "split" in v]
        if split:
            raise ConfigError(f"extract.store_maps: false is not available for experiments that split one dataset "
                              f"({', '.join(split)}): set store_maps: true")
    for key, spec in config["adapters"].items():
        try:
            check_adapter(key, spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    sel = config["selection"]
    if sel["default"] not in sel["criteria"]:
        raise ConfigError(f"selection.default: {sel['default']!r} is not in selection.criteria "
                          f"({', '.join(sel['criteria'])})")
    for name, r in config["reducers"].items():
        try:
            check_reducer(name, r)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for name, exp in config["experiments"].items():
        if exp.get("source", {}).get("labels") == "none":
            raise ConfigError(f"experiments.{name}.source.labels: the source must be labelled (its class "
                              "folders train the classifier); labels: none is for a target")
        if exp.get("target", {}).get("labels") == "none" and exp["target"].get("class_map"):
            raise ConfigError(f"experiments.{name}.target.class_map: an unlabelled target (labels: none) has "
                              "no class folders to map; remove class_map")
        for side in ("source", "target"):
            if side in exp and Path(exp[side]["path"]).exists() and not Path(exp[side]["path"]).is_dir():
                raise ConfigError(f"experiments.{name}.{side}.path: {exp[side]['path']} is a file, not a folder")
            if side in exp and not Path(exp[side]["path"]).is_dir():
                raise ConfigError(f"experiments.{name}.{side}.path: folder {exp[side]['path']} not found")


def resolve_store_maps(config: dict) -> bool:
    """``extract.store_maps``, with ``auto`` resolved in place: the maps stay off the disk unless an experiment
    splits one dataset (each split fits PCA on its own rows of the pooled maps) or ``one_pass`` is false
    (the reducers run inside the one-pass extraction)."""
    ex = config["extract"]
    if ex["store_maps"] == "auto":
        ex["store_maps"] = not ex["one_pass"] or any("split" in v for v in config["experiments"].values())
    return ex["store_maps"]


def pca_components_held(config: dict, in_pass: bool) -> int:
    """PCA components an extraction pass without stored maps holds: one block's (a pass per block) or every
    block's (``extract.pca_in_pass``); 0 without a fitted reducer."""
    components = [r.get("n_components", PCA_COMPONENTS) for r in config["reducers"].values() if is_fitted(r)]
    if not components:
        return 0
    return sum(components) * len(config["local_layers"]) if in_pass else max(components)


def resolve_pca_in_pass(config: dict, budget_mb: float) -> bool:
    """``extract.pca_in_pass``, with ``auto`` resolved in place: every PCA block projected in the main pass (one
    pass through the network instead of one more per block: 1.26x the images/s on Amazon→Webcam, the same
    results) where that pass, holding every block's loadings, fits ``budget_mb``
    (:data:`layerfuse.job_memory.PASS_BUDGET_MB` in the workflow); else a pass per block."""
    ex = config["extract"]
    if ex["pca_in_pass"] == "auto":
        held = pca_components_held(config, True)
        ex["pca_in_pass"] = bool(held) and extraction_pass_mb(config["image_size"], held) <= budget_mb
    return ex["pca_in_pass"]


def _image_count(spec, classes: list[str], manifest: Path | None = None) -> int:
    """Images a domain will have at most: the usable count of an earlier run's ``manifest`` where it still
    lists exactly the files there now, else the files that pass the scan (image extension, not hidden)."""
    rows = scan_folder(spec, classes)
    if manifest is not None and Path(manifest).is_file():
        listed = [r for r in read_manifest(manifest) if r["status"] != "dropped"]
        if {r["image_id"] for r in listed} == {r["image_id"] for r in rows}:
            rows = listed
    return sum(r["status"] == "ok" for r in rows)


def _domain_specs(exp: dict):
    return DomainSpec.from_config(exp["source"]), DomainSpec.from_config(exp["target"]) if "target" in exp else None


def experiment_classes(exp: dict) -> list[str] | None:
    """The classes an experiment uses, from its folders (None for the generated demo, known only after its rule)."""
    if "synthetic" in exp:
        return None
    return resolve_classes(*_domain_specs(exp), exp.get("classes", "common"))


def experiment_sizes(exp: dict, manifests: dict | None = None) -> tuple[int, int]:
    """(source, target) image counts an experiment will have at most, from its folders or demo settings.

    ``manifests`` ({domain: path}) of an earlier run give usable-image counts
    instead of file counts where they still list the folder's files.
    """
    if "synthetic" in exp:
        syn = exp["synthetic"]
        return syn["n_classes"] * syn["n_source"], syn["n_classes"] * syn["n_target"]
    source, target = _domain_specs(exp)
    classes = experiment_classes(exp)
    if len(classes) < 2:
        raise ValueError(f"only one class ({classes[0]!r}) is used; a classifier needs at least 2 "
                         "(check the class folders, class_map and classes: common|all)")
    if target is None:                  # a split's manifests hold parts of the folder: count its files
        n_source = _image_count(source, classes)
        n_target = math.ceil(exp["split"]["test_size"] * n_source)
        return n_source - n_target, n_target
    manifests = manifests or {}
    return (_image_count(source, classes, manifests.get("source")),
            _image_count(target, classes, manifests.get("target")))


def _experiment_counts(config: dict, results) -> dict:
    """``{experiment: (n_source, n_target)}`` where both can be counted now (the rest :func:`check_data_sizes`
    reports)."""
    counts = {}
    for name, exp in config["experiments"].items():
        manifests = {d: Path(results) / name / "manifest" / f"{d}.tsv" for d in ("source", "target")}
        try:
            n_source, n_target = experiment_sizes(exp, manifests)
        except ValueError:
            continue
        if n_source and n_target:
            counts[name] = (n_source, n_target)
    return counts


def cap_to_data(config: dict, given: dict, results: str | Path = "results") -> list[str]:
    """Lower the sizes the user left at their defaults to what the smallest experiment's data allow, in place:
    ``tca.dims`` to at most its images (source + target), a PCA reducer's ``n_components`` to its source images
    − 1.  ``given``: the config as written, before the schema's defaults were filled (a value written there is
    the user's and is checked, not capped, by :func:`check_data_sizes`).  Returns one line per value capped."""
    counts = _experiment_counts(config, results)
    if not counts:
        return []
    notes = []
    name, (n_source, n_target) = min(counts.items(), key=lambda kv: sum(kv[1]))
    dims = config["tca"]["dims"]
    if "dims" not in (given.get("tca") or {}) and max(dims) > n_source + n_target:
        config["tca"]["dims"] = sorted({min(d, n_source + n_target) for d in dims}, reverse=True)
        notes.append(f"tca.dims: the default {dims} capped to {config['tca']['dims']} (experiment {name!r} has "
                     f"{n_source + n_target} images, source + target)")
    name, (n_source, _) = min(counts.items(), key=lambda kv: kv[1][0])
    given_reducers = given.get("reducers") or {}
    for rname, red in config["reducers"].items():
        k = red.get("n_components", PCA_COMPONENTS)
        if (is_fitted(red) and "n_components" not in (given_reducers.get(rname) or {})
                and k > max(n_source - 1, 1)):
            red["n_components"] = max(n_source - 1, 1)
            notes.append(f"reducers.{rname}.n_components: the default {k} capped to {red['n_components']} "
                         f"(experiment {name!r} has {n_source} source images)")
    return notes


def dropped_defaults(given: dict, schema_path) -> list[str]:
    """One line per top-level mapping the user wrote that leaves out entries of its default (a mapping given in
    the config replaces the default one, it is not merged into it: e.g. ``reducers: {pca: ...}`` alone drops
    flatten and pool2d)."""
    schema = load_schema(schema_path)
    lines = []
    for key, prop in schema.get("properties", {}).items():
        default = prop.get("default") if isinstance(prop, dict) else None
        if isinstance(default, dict) and default and "propertyNames" in prop and isinstance(given.get(key), dict):
            missing = [k for k in default if k not in given[key]]
            if missing:
                them = "them" if len(missing) > 1 else "it"
                lines.append(f"{key}: your mapping replaces the default one and leaves out {', '.join(missing)} "
                             f"(add {them} to keep {them})")
    return lines


def check_data_sizes(config: dict, results: str | Path = "results") -> None:
    """Raise ``ConfigError`` when an experiment's data cannot support the requested sizes.

    Catches, before any job runs: domains that share no class, a class map
    naming a missing folder, TCA dimensions above the number of images, and
    PCA components above the number of source images.  Where an earlier run's
    manifests (``results/<experiment>/manifest/``) still list the folders'
    files, the counts are of usable images, not files.
    """
    for name, exp in config["experiments"].items():
        manifests = {d: Path(results) / name / "manifest" / f"{d}.tsv" for d in ("source", "target")}
        try:
            n_source, n_target = experiment_sizes(exp, manifests)
        except ValueError as exc:
            raise ConfigError(_one_line(f"experiments.{name}: {exc}")) from None
        if n_source == 0 or n_target == 0:
            unlabelled = (exp.get("target") or {}).get("labels") == "none"
            where = ("the source in its class folders, the target anywhere below its folder" if unlabelled
                     else "in their class folders")
            raise ConfigError(f"experiments.{name}: {n_source} source and {n_target} target images found; "
                              f"both domains need images ({where})")
        dims = config["tca"]["dims"]
        if dims and max(dims) > n_source + n_target:
            raise ConfigError(f"tca.dims: {max(dims)} components exceed the {n_source + n_target} images of "
                              f"experiment {name!r} (source + target); use at most {n_source + n_target}")
        for rname, red in config["reducers"].items():
            k = red.get("n_components")
            if is_fitted(red) and k is not None and k > n_source - 1:
                raise ConfigError(f"reducers.{rname}.n_components: {k} components need more than the {n_source} "
                                  f"source images of experiment {name!r}; use at most {n_source - 1}")


def check_output_folders(folders=("results", "logs", "benchmarks", "resources"), root=".") -> None:
    """Raise ``ConfigError`` when an output folder is a file or cannot be written (before Snakemake scans it)."""
    root = Path(root)
    for name in folders:
        path = root / name
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: exists but is not a folder; move it away or run in another --directory")
        target = path if path.exists() else root
        if not os.access(target, os.W_OK | os.X_OK):
            raise ConfigError(f"{target}: folder is not writable; fix its permissions or use another --directory")


def check_duplicate_keys(paths) -> None:
    """Raise ``ConfigError`` naming the first key written twice in one mapping of a YAML config file.

    PyYAML (and so Snakemake) silently keeps the last of duplicate keys.
    """
    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{key_node.start_mark.name}:{key_node.start_mark.line + 1}: key {key!r} "
                                  "is given twice in one mapping (YAML would keep only the last); remove one")
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            try:
                yaml.load(f, Loader=StrictLoader)
            except yaml.YAMLError:
                pass  # Snakemake reports syntax errors itself


def node_is_frozen(node: str, trainable: str) -> bool:
    """Whether a graph node's output is unchanged by fine-tuning ``trainable`` (it lies before the tail)."""
    if node in ("avgpool", "flatten", "fc"):
        return False
    first = {"fc": None, "conv3": "layer4.2.conv3", "block": "layer4.2", "stage": "layer4"}[trainable]
    if first is None:
        return True
    if trainable == "conv3":
        return not (node.startswith("layer4.2.") and node.split(".")[2] in ("conv3", "bn3", "add", "relu_2"))
    return not (node == first or node.startswith(first + "."))
