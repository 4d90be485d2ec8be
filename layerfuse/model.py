"""A saved model: everything that classifies new images with one cell of the grid, in safe formats.

``results/<experiment>/model/<backbone>/`` holds two files, no pickle:

``model.json``
    what the model is: the format number, the layerfuse version, the cell (feature set, adapter,
    centring) and the criterion that picked it, the class names, the backbone (architecture,
    preprocessing, the weights file's path relative to the model folder and its SHA-256), the layers'
    graph nodes, image size and extraction precision, the reducer, fusion and SVM parameters, and the
    SHA-256 of ``model.h5``.
``model.h5``
    the arrays: PCA mean and loadings (``d x k``: 4 bytes per map value and component, 400 MB for
    128 components of a 256 x 55 x 55 block), the fusion's block scales, the adapter (TCA keeps the
    rows its kernel is evaluated against, every fitted image or the Nyström landmarks, and their
    coefficients: ``N x d`` plus ``N x k`` numbers, and so does JDA; a skada adapter its affine target map
    ``W``, ``b``),
    each domain's mean for the centring, and the SVM's coefficients.

:func:`predict` runs images through the same steps as the workflow (decode, network, reducer,
fusion, adapter, centring, SVM) without Snakemake and without writing feature maps; on the target's
own images it gives the workflow's predictions (a test checks it).  New images are centred on the
target mean of the workflow's run: they are taken to come from that target domain.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import __version__, adapt
from .evaluate import center_domains
from .fusion import apply_scale
from .h5io import atomic_path, read_arrays, read_pair
from .images import _file_row, _read_and_decode, _scan_unlabelled, decode_workers, manifest_classes
from .layout import cell_decisions, cell_predictions, rows_in, store_of
from .reduce import apply_reducer, is_fitted, pca_loadings
from .calibration import margin_calibration, platt_probability, weighted_platt
from .select import ALL_FEATURESETS, ENSEMBLE, refine_of, vote_members
from .self_training import refine_cell
from .svm import decide, decision_matrix, fit_svm, svm_kwargs
from .weights import sha256_file

__all__ = ["MODEL_FORMAT", "export_model", "load_model", "predict"]

log = logging.getLogger("layerfuse.model")

MODEL_FORMAT = 1
_FILES = ("model.json", "model.h5")


def _pick_row(selection_csv, cell: dict | None) -> dict:
    """The default criterion's pick in a selection table, or ``cell`` ({featureset, adapter, center})."""
    table = pd.read_csv(selection_csv)
    if cell is not None:
        return {"criterion": "given", **cell}
    pick = table[table["default"].astype(bool)]
    if pick.empty:
        raise ValueError(f"{selection_csv}: the default criterion picked no cell")
    row = pick.iloc[0]
    members = vote_members(row) if row["kind"] == ENSEMBLE else None
    return {"criterion": row["criterion"], "featureset": row["featureset"], "adapter": row["adapter"],
            "center": row["center"], "refine": refine_of(row), "members": members,
            "combine": row.get("combine") if members else None}


def export_model(inputs: dict, params: dict, out_dir, cell: dict | None = None) -> dict:
    """Write the model of one backbone's selected cell (or of ``cell``) to ``out_dir``.

    ``inputs``: ``selection`` (the backbone's selection CSV), ``predictions`` (its prediction stores),
    ``weights`` and ``record`` (the backbone), ``fused`` and ``adapted`` (every feature set's stores),
    ``reduced`` (PCA feature sets' reduced pairs), ``maps`` (the source map stores of the PCA layers),
    ``source_manifest`` and ``target_manifest``, ``global_store`` (the target's global store: the
    precision used).  ``params``: ``layers``, ``global_layer``, ``image_size``, ``max_file_mb``,
    ``extract``, ``reducers``, ``fusion``, ``svm``, ``refine`` (``selection.refine``: where the pick was refined,
    the SVM kept is the refined classifier's last refit), ``seed``.  Where the pick is the candidates' vote
    (``selection.combine``) the model keeps every member's map and SVM (``members/<i>/``) and their weights.
    Returns the model's JSON record.
    """

    pick = _pick_row(inputs["selection"], cell)
    featureset, center = pick["featureset"], pick["center"]
    refine = pick.get("refine", "")
    if refine and params["refine"]["method"] != refine:
        raise ValueError(f"{inputs['selection']}: the pick was refined by {refine}, the config says "
                         f"selection.refine.method: {params['refine']['method']}; rerun the workflow")
    spanning = featureset == ALL_FEATURESETS   # a vote whose members come from several feature sets
    sets = list(dict.fromkeys(m[0] for m in pick["members"])) if spanning else [featureset]
    fused, arrays, set_records = {}, {}, {}
    for fs in sets:
        fs_arrays, set_records[fs], fused[fs] = _featureset_parts(inputs, params, fs)
        arrays.update({(f"featuresets/{fs}/{k}" if spanning else k): v for k, v in fs_arrays.items()})
    if pick.get("members"):
        votes, want, members, platts = 0.0, 0.0, [], []
        stored = {fs: cell_decisions(inputs["predictions"], fs) for fs in sets}   # the workflow's, per feature set
        for i, (fs, adapter, member_center, weight) in enumerate(pick["members"]):
            xs, xt, ys = fused[fs][:3]
            member = _member_model(inputs, params, fs, adapter, member_center, xs, xt, ys, refine)
            arrays.update({f"members/{i}/{k}": v for k, v in member["arrays"].items()})
            members.append({"featureset": fs, "adapter": adapter, "center": member_center, "weight": weight,
                            "adapter_record": member["adapter_record"]})
            votes = votes + weight * member["decision"].astype(np.float64)
            want = want + weight * stored[fs][(adapter, member_center)].astype(np.float64)
            platts.append(member["platt"])
        platt = weighted_platt([m["weight"] for m in members], platts)
        if not np.array_equal(votes.argmax(axis=1), want.argmax(axis=1)):
            raise ValueError(f"{featureset}: the refitted members' vote disagrees with the workflow's on "
                             f"{int((votes.argmax(1) != want.argmax(1)).sum())} image(s); rerun the workflow")
        pick.update(platt=platt, member_records=members)
        adapter_record = None
    else:
        xs, xt, ys = fused[featureset][:3]
        member = _member_model(inputs, params, featureset, pick["adapter"], center, xs, xt, ys, refine)
        arrays.update(member["arrays"])
        _check_reproduces(inputs["predictions"], featureset, pick["adapter"], center, member["pred"],
                          refined=bool(refine))
        pick["platt"], adapter_record = member["platt"], member["adapter_record"]
    record = _model_record(inputs, params, Path(out_dir), pick, set_records, adapter_record)
    _write_model_dir(Path(out_dir), record, arrays)
    log.info("model of %s/%s/%s (picked by %s) written to %s", featureset, pick["adapter"], center,
             pick["criterion"], out_dir)
    return record


def _featureset_parts(inputs: dict, params: dict, featureset: str):
    """``(arrays, record, (xs, xt, ys))`` of one feature set: its fusion's block scales and PCA's mean and
    loadings, what ``model.json`` says of its layer, reducer and fusion, and its fused source and target."""
    layer, _, reducer = featureset.partition("-")
    xs, xt, ys, _, fused_attrs = read_pair(store_of(inputs["fused"], featureset))
    arrays = {"fusion/scales": np.array([np.nan if s is None else s
                                         for s in json.loads(fused_attrs["block_scales"])], np.float64)}
    reducer_params = params["reducers"][reducer] if reducer else None
    if reducer_params and is_fitted(reducer_params):
        arrays.update(_pca_arrays(inputs, featureset))
    record = {"layer": layer, "local": params["layers"][layer] if reducer else None, "reducer": reducer_params,
              "scaling": fused_attrs["scaling"]}
    return arrays, record, (xs, xt, ys)


def _member_model(inputs: dict, params: dict, featureset: str, adapter: str, center: str, xs, xt, ys,
                  refine: str) -> dict:
    """One cell's saved map and SVM (``arrays``: adapter, ``center/target_mean``, ``svm/*``), its
    ``adapter_record``, its target predictions (``pred``) and decision values (``decision``,
    :func:`layerfuse.svm.decision_matrix`), and its Platt map (``platt``), refitted as the workflow fitted it."""
    (zs, zt), adapter_record, arrays = _adapter_arrays(inputs, featureset, adapter, xs, xt)
    arrays = dict(arrays)
    priors = _cell_priors(inputs["predictions"], featureset, adapter) if center == "prior" else None
    cs, ct = center_domains(zs, zt, center, ys=ys, target_priors=priors)
    if center != "none":                        # what new target images are centred on
        arrays["center/target_mean"] = (zt - ct).mean(0)
    svm_args = svm_kwargs(params["svm"])
    if refine:                                  # the refined classifier's last refit predicts as the workflow's did
        pred, _, refined = refine_cell(cs, ys, ct, refine=params["refine"], svm=svm_args)
        svm = refined.svm_
        decision = refined.decision_function(ct)
    else:
        svm = fit_svm(cs, ys, **svm_args)
        decision = svm.decision_function(ct)
        pred, _ = decide(decision, svm.classes_)
    arrays["svm/coef"], arrays["svm/intercept"], arrays["svm/classes"] = svm.coef_, svm.intercept_, svm.classes_
    # the margin -> probability map of the workflow's predictions (the same fit on the same centred source)
    return {"arrays": arrays, "adapter_record": adapter_record, "pred": pred, "decision": decision_matrix(decision),
            "platt": margin_calibration(cs, ys, svm=svm_args, seed=params.get("seed", 0))}


def _pca_arrays(inputs: dict, featureset: str) -> dict:
    """The PCA reducer's mean and loadings: over the layer's source maps (the rows the workflow fitted on), or
    as fitted on the source's sample where the maps were reduced in the extraction pass."""

    layer = featureset.partition("-")[0]
    if inputs.get("pca"):                         # maps not stored: the loadings the extraction projected onto
        a, _ = read_arrays(store_of(inputs["pca"], featureset), ["mean", "loadings"])
        return {"reducer/mean": a["mean"], "reducer/loadings": a["loadings"]}
    coef = read_arrays(store_of(inputs["reduced"], featureset), ["pca_coef"])[0]["pca_coef"]
    maps = {Path(p).stem: p for p in inputs["maps"]}[layer]
    with h5py.File(maps, "r") as f:
        ids = {"image_ids": f["image_ids"].asstr()[()], "labels": f["labels"][()]}
        rows = rows_in(ids, maps, inputs["source_manifest"])
        mean, loadings = pca_loadings(f["features"], coef, rows)
    return {"reducer/mean": mean.astype(np.float32), "reducer/loadings": loadings.astype(np.float32)}


def _adapter_arrays(inputs: dict, featureset: str, adapter: str, xs, xt):
    """``((zs, zt), record, arrays)``: the cell's adapted features and what maps a new target image
    (:func:`layerfuse.adapt.saved_map`)."""
    if adapter == adapt.NO_ADAPTER:
        return adapt.saved_map(adapter, {}, {}, xs, xt)
    key, _ = adapt.parse_cell(adapter)
    path = store_of(inputs["adapted"], featureset, key)
    store, attrs = read_arrays(path, adapt.stored_arrays(read_arrays(path, [])[1]))
    try:
        return adapt.saved_map(adapter, store, attrs, xs, xt)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _model_record(inputs: dict, params: dict, out_dir: Path, pick: dict, set_records: dict,
                  adapter_record: dict) -> dict:
    """``model.json``'s content (without the SHA-256 of ``model.h5``).  A vote across feature sets (its
    feature set ``all``) keeps each one's layer, reducer and fusion in ``featuresets``, its arrays under
    ``featuresets/<feature set>/``; one feature set's model keeps them at the top."""
    featureset = pick["featureset"]
    one = set_records.get(featureset) or {"layer": None, "local": None, "reducer": None,
                                          "scaling": params["fusion"]["scaling"]}
    with h5py.File(inputs["global_store"], "r") as f:
        precision = str(f.attrs["precision"])
    record_in = json.loads(Path(inputs["record"]).read_text())
    # the experiment's class names, indexed by label (a generated demo's are known from its manifests only)
    classes = list(params.get("classes") or manifest_classes(inputs["source_manifest"], inputs["target_manifest"]))
    return {
        "format": MODEL_FORMAT, "layerfuse_version": __version__, "experiment": params.get("experiment", ""),
        "backbone": {"name": params.get("backbone", ""), "architecture": record_in["architecture"],
                     "preprocessing": record_in["preprocessing"], "maxpool_pad": record_in["maxpool_pad"],
                     "weights": os.path.relpath(Path(inputs["weights"]).resolve(), out_dir.resolve()),
                     "weights_sha256": record_in["sha256"]},
        "cell": {"featureset": featureset, "layer": one["layer"], "reducer": featureset.partition("-")[2] or None,
                 "adapter": pick["adapter"],
                 "center": pick["center"], "picked_by": pick["criterion"],
                 "refine": params["refine"] if pick.get("refine") else None,
                 "calibration": {"method": "platt", "a": pick["platt"][0], "b": pick["platt"][1]},
                 **({"combine": pick["combine"], "members": pick["member_records"]} if pick.get("members") else {})},
        "classes": classes,
        "layers": {"global": params["layers"][params["global_layer"]], "local": one["local"]},
        "image_size": params["image_size"], "max_file_mb": params["max_file_mb"],
        "extract": {"precision": precision, "batch_size": params["extract"]["batch_size"],
                    "local_dtype": params["extract"]["local_dtype"]},
        "reducer": one["reducer"], "fusion": {"scaling": one["scaling"]}, "adapter": adapter_record,
        **({"featuresets": set_records} if featureset == ALL_FEATURESETS else {}),
        "svm": params["svm"], "config": params,
    }


def _cell_priors(prediction_stores, featureset: str, adapter: str) -> list:
    """The target's class proportions the workflow estimated for a cell's ``prior`` centring."""
    with h5py.File(store_of(prediction_stores, featureset), "r") as f:
        return json.loads(f.attrs["target_priors"])[adapter]


def _check_reproduces(prediction_stores, featureset, adapter, center, pred, refined: bool = False) -> None:
    """The exported SVM must give the workflow's predictions for the cell (same data, same seed)."""
    expected = cell_predictions(prediction_stores, featureset, adapter, center, refined=refined)[0]
    if not np.array_equal(expected, pred):
        raise ValueError(f"{featureset}: the refitted SVM disagrees with the workflow's predictions on "
                         f"{int((expected != pred).sum())} image(s); rerun the workflow")


def _write_model_dir(out_dir: Path, record: dict, arrays: dict) -> None:
    """Both files in a sibling temporary folder, then one rename: the model appears whole or not at all."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with h5py.File(tmp / "model.h5", "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=np.asarray(value))
        record = {**record, "model_h5_sha256": sha256_file(tmp / "model.h5")}
        (tmp / "model.json").write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_model(model_dir) -> tuple[dict, dict]:
    """``(record, arrays)`` of a saved model, checked: a missing, tampered or incompatible model is one
    ``ValueError`` naming the file."""
    model_dir = Path(model_dir)
    json_path, h5_path = model_dir / "model.json", model_dir / "model.h5"
    for path in (json_path, h5_path):
        if not path.is_file():
            raise ValueError(f"{path}: not found; a model folder is results/<experiment>/model/<backbone>")
    try:
        record = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{json_path}: not a layerfuse model record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise ValueError(f"{json_path}: model format {found!r}, this layerfuse ({__version__}) reads format "
                         f"{MODEL_FORMAT}; re-export it with the workflow of this version")
    if sha256_file(h5_path) != record.get("model_h5_sha256"):
        raise ValueError(f"{h5_path}: sha256 differs from the one recorded in {json_path.name}: the model was "
                         "modified; re-export it")
    arrays = {}
    with h5py.File(h5_path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return record, arrays


class _Pipeline:
    """The saved cell as functions of a batch: network outputs -> SVM decision values."""

    def __init__(self, record: dict, arrays: dict):
        self.record, self.arrays = record, arrays
        sets = record.get("featuresets")       # a vote across feature sets: each one's reducer and fusion
        if sets is None:
            sets = {record["cell"]["featureset"]: {"local": record["layers"]["local"], "reducer": record["reducer"],
                                                   "scaling": record["fusion"]["scaling"]}}
        self.sets = {}
        for name, spec in sets.items():
            prefix = f"featuresets/{name}/" if "featuresets" in record else ""
            a = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            self.sets[name] = (spec, a, [None if np.isnan(x) else float(x) for x in a["fusion/scales"]])
        # the SVM's class labels (a vote's members share them)
        self.classes = arrays["svm/classes"] if "svm/classes" in arrays else arrays["members/0/svm/classes"]

    def local_nodes(self) -> list[str]:
        """The graph nodes whose maps the feature sets reduce (none for the Global feature set alone)."""
        return list(dict.fromkeys(spec["local"] for spec, _, _ in self.sets.values() if spec["local"]))

    def features(self, global_vec: np.ndarray, local_maps: dict) -> dict:
        """``{feature set: fused features}`` of a batch (``local_maps``: ``{node: maps}``)."""
        out = {}
        for name, (spec, a, scales) in self.sets.items():
            blocks = [global_vec]
            if spec["local"]:
                fitted = {"mean": a.get("reducer/mean"), "loadings": a.get("reducer/loadings")}
                blocks.append(apply_reducer(local_maps[spec["local"]], spec["reducer"], fitted))
            out[name] = np.concatenate([apply_scale(b, spec["scaling"], s) for b, s in zip(blocks, scales)], axis=1)
        return out

    def decision(self, features: dict) -> np.ndarray:
        cell = self.record["cell"]
        members = cell.get("members")
        if not members:
            return self._cell_decision(features[cell["featureset"]], self.record["adapter"], self.arrays)
        # the candidates' vote: each member's decision values (two columns for two classes), weighted
        vote = 0.0
        for i, member in enumerate(members):
            prefix = f"members/{i}/"
            arrays = {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}
            x = features[member.get("featureset", cell["featureset"])]
            d = decision_matrix(self._cell_decision(x, member["adapter_record"], arrays))
            vote = vote + member["weight"] * d.astype(np.float64)
        return vote

    @staticmethod
    def _cell_decision(x: np.ndarray, adapter_record, a: dict) -> np.ndarray:
        x = adapt.apply_saved_map(x, adapter_record, a)
        if "center/target_mean" in a:
            x = x - a["center/target_mean"]
        d = x @ a["svm/coef"].T + a["svm/intercept"]
        return d[:, 0] if d.shape[1] == 1 else d


def _scan_paths(paths) -> list[tuple[Path, Path, str, dict]]:
    """``(root, file, shown name, manifest row)`` for every file named or found below a named folder."""
    found = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found += [(p, p / r["image_id"], r["image_id"], r) for r in _scan_unlabelled(p)]
        elif p.exists() or p.is_symlink():
            found.append((p.parent, p, str(arg), _file_row(p, p.name, "", -1)))
        else:
            raise ValueError(f"{arg}: no such file or folder")
    return found


def predict(model_dir, paths, out_csv=None, *, weights=None, batch_size: int | None = None,
            threads: int | None = None, device: str | None = None):
    """Classify image files and folders (searched recursively) with a saved model.

    ``device`` (``auto``, ``cpu`` or ``cuda``): where the network runs; by default the device the model's
    extraction chose (``extract.device``), else ``auto``, a GPU where there is one (whose features equal the
    CPU's to rounding only).

    Returns a table with a row per file: ``image`` (relative to its folder, or as given), ``predicted``,
    ``probability`` and ``margin`` (as in the workflow's predictions), ``cell``, ``refine`` (the method that
    refitted its SVM, empty for none), ``status`` (``ok`` or ``skipped``) and ``reason``; written atomically
    to ``out_csv`` when given.
    """
    import torch  # torch and the network's modules load only when images are classified (2 s)

    from .extract import BackboneSpec, feature_extractor, load_backbone, resolve_device  # torch: as above

    record, arrays = load_model(model_dir)
    device = resolve_device(device or record["extract"].get("device", "auto"), "--device")   # before the weights load
    bb = record["backbone"]
    weights = Path(weights) if weights else Path(model_dir) / bb["weights"]
    if not weights.is_file():
        raise ValueError(f"{weights}: backbone weights not found (pass --weights with the file whose sha256 is "
                         f"{bb['weights_sha256']})")
    spec = BackboneSpec(bb["architecture"], bb["preprocessing"], bb["maxpool_pad"])
    model = load_backbone(weights, spec, bb["weights_sha256"])
    if threads:
        torch.set_num_threads(int(threads))
    pipeline = _Pipeline(record, arrays)
    local = {f"local{i}": node for i, node in enumerate(pipeline.local_nodes())}
    nodes = {record["layers"]["global"]: "global", **{node: key for key, node in local.items()}}
    extractor, prepared, _, _ = feature_extractor(model, spec, nodes, record["extract"]["precision"], device)
    local_dtype = getattr(torch, record["extract"]["local_dtype"])
    classes = np.asarray(record["classes"])
    cell = "/".join(record["cell"][k] for k in ("featureset", "adapter", "center"))
    refine = (record["cell"].get("refine") or {}).get("method", "")      # models saved before refinement: none
    platt = record["cell"].get("calibration") or {"a": np.nan, "b": np.nan}   # models saved before calibration
    batch_size = int(batch_size or record["extract"]["batch_size"])
    max_bytes = int(record["max_file_mb"] * 2**20)

    files = _scan_paths(paths)
    rows = [{"image": shown, "predicted": "", "probability": np.nan, "margin": np.nan, "cell": cell, "refine": refine,
             "status": row["status"],
             "reason": row["reason"]} for _, _, shown, row in files]
    todo = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool, \
            tqdm(total=len(todo), desc="predict", unit="img", mininterval=2.0) as bar:
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo:lo + batch_size]
            decoded = list(pool.map(lambda i: _read_and_decode(files[i][1], files[i][0], record["image_size"],
                                                               max_bytes), chunk))
            ok = [(i, image) for i, (_, image, reason) in zip(chunk, decoded) if reason is None]
            for i, (_, _, reason) in zip(chunk, decoded):
                if reason is not None:
                    rows[i].update(status="skipped", reason=reason)
            if ok:
                with torch.inference_mode():
                    out = extractor(prepared(np.stack([image for _, image in ok])))
                g = out["global"].to("cpu", torch.float32).numpy()     # from a GPU's memory, where it ran
                maps = {node: out[key].to(local_dtype).contiguous().to("cpu", torch.float32).numpy()
                        for key, node in local.items()}
                pred, margin = decide(pipeline.decision(pipeline.features(g, maps)), pipeline.classes)
                probability = platt_probability(margin, platt["a"], platt["b"])
                for (i, _), p, m, q in zip(ok, pred, margin, probability):
                    rows[i].update(predicted=classes[p], probability=float(q), margin=float(m))
            bar.update(len(chunk))
    table = pd.DataFrame(rows, columns=["image", "predicted", "probability", "margin", "cell", "refine", "status",
                                       "reason"])
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
    return table
