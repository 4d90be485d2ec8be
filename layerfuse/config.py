"""Checks the JSON schema cannot express, and the plan derived from a validated config."""
from __future__ import annotations

from pathlib import Path

__all__ = ["check_config", "featuresets", "adapters", "backbone_spec", "domain_specs"]

TORCHVISION_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")


def featuresets(config: dict) -> list[str]:
    """``global`` plus ``<layer>-<reducer>`` for every local layer and reducer."""
    return [config["global_layer"]] + [f"{layer}-{red}" for layer in config["local_layers"]
                                       for red in config["reducers"]]


def adapters(config: dict) -> list[str]:
    """``none`` (no-TCA baseline, if enabled) and ``tca-<dims>`` for each TCA dimension."""
    tca = config["tca"]
    return (["none"] if tca["baseline"] else []) + [f"tca-{d}" for d in sorted(tca["dims"], reverse=True)]


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
    """Raise ``ValueError`` naming the key and the fix for what the schema cannot check."""
    layers = config["layers"]
    if config["global_layer"] not in layers:
        raise ValueError(f"global_layer: {config['global_layer']!r} is not a key of layers "
                         f"({', '.join(layers)}); add it to layers")
    for layer in config["local_layers"]:
        if layer not in layers:
            raise ValueError(f"local_layers: {layer!r} is not a key of layers ({', '.join(layers)})")
        if layer == config["global_layer"]:
            raise ValueError(f"local_layers: {layer!r} is the global layer; list only local layers")
    for name, b in config["backbones"].items():
        if "finetune" in b:
            base = b["finetune"]["base"]
            if base not in config["backbones"] or "finetune" in config["backbones"][base]:
                raise ValueError(f"backbones.{name}.finetune.base: {base!r} must name a backbone with weights "
                                 f"({', '.join(k for k, v in config['backbones'].items() if 'weights' in v)})")
            continue
        w = b["weights"]
        if w not in ("keras-npm",) + TORCHVISION_WEIGHTS and not w.endswith((".pth", ".pt")):
            raise ValueError(f"backbones.{name}.weights: {w!r} is not keras-npm, "
                             f"{' or '.join(TORCHVISION_WEIGHTS)}, or a path to a .pth file")
        if w.endswith((".pth", ".pt")) and not Path(w).is_file():
            raise ValueError(f"backbones.{name}.weights: file {w} not found")
    for name, r in config["reducers"].items():
        if r["method"] == "pca" and r.get("segment") is not None:
            raise ValueError(f"reducers.{name}: 'segment' applies to flatten, not pca")
    for name, exp in config["experiments"].items():
        for side in ("source", "target"):
            if side in exp and not Path(exp[side]["path"]).is_dir():
                raise ValueError(f"experiments.{name}.{side}.path: folder {exp[side]['path']} not found")
