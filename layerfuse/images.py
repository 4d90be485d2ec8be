"""Datasets as folders: scan, map classes, hash, decode once into uint8 tensors.

A dataset is a directory of ``<class>/<image>`` files.  An experiment takes a
source and a target dataset (or one dataset split into both) and an optional
class map per domain: ``{folder: class}`` merges folders into one class, a
``null`` value drops a folder, and ``classes: common`` keeps only classes both
domains have.  Unreadable files are skipped with a reason recorded in the
manifest; problems the user must fix raise ``ValueError`` naming the path.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .h5io import atomic_path, create_store, write_meta

__all__ = [
    "IMAGE_EXTENSIONS",
    "DomainSpec",
    "scan_folder",
    "resolve_classes",
    "build_domain",
    "decode_image",
    "write_manifest",
    "read_manifest",
]

log = logging.getLogger("layerfuse.images")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 64_000_000  # decompression-bomb guard: ~8000x8000
MIN_SIDE = 8  # smaller images carry no usable content at 224 px


@dataclass(frozen=True)
class DomainSpec:
    """One side of an experiment: a folder and how its sub-folders map to classes."""

    path: str
    class_map: dict = field(default_factory=dict)

    def folder_classes(self) -> dict[str, str | None]:
        """{folder name: class name or None (dropped)} for every class folder present."""
        root = Path(self.path)
        if not root.is_dir():
            raise ValueError(f"dataset folder not found: {root}")
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for name in self.class_map:
            if name not in folders:
                raise ValueError(f"class_map names folder {name!r}, which {root} does not have "
                                 f"(it has: {', '.join(folders[:12])})")
        return {name: self.class_map.get(name, name) for name in folders}


def resolve_classes(source: DomainSpec, target: DomainSpec | None, keep: str = "common") -> list[str]:
    """Sorted class names used by an experiment (``common`` to both domains, or ``all`` source classes)."""
    src = {c for c in source.folder_classes().values() if c is not None}
    if target is None:
        return sorted(src)
    tgt = {c for c in target.folder_classes().values() if c is not None}
    classes = sorted(src & tgt) if keep == "common" else sorted(src)
    if not classes:
        raise ValueError(f"source {source.path} and target {target.path} share no class "
                         f"(source: {sorted(src)[:8]}, target: {sorted(tgt)[:8]}); add a class_map")
    return classes


def scan_folder(spec: DomainSpec, classes: list[str]) -> list[dict]:
    """Every file under the class folders, with its class label or a skip reason."""
    rows = []
    index = {c: i for i, c in enumerate(classes)}
    root = Path(spec.path)
    for folder, cls in spec.folder_classes().items():
        if cls is None or cls not in index:
            continue
        files = sorted((root / folder).iterdir(), key=lambda p: p.name)
        if not files:
            log.warning("class folder %s is empty", root / folder)
        for p in files:
            row = {"image_id": f"{folder}/{p.name}", "class": cls, "label": index[cls],
                   "sha256": "", "status": "ok", "reason": ""}
            try:
                p.name.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes in the name (surrogate escapes)
                row.update(image_id=f"{folder}/{p.name.encode('utf-8', 'backslashreplace').decode()}",
                           status="skipped", reason="file name is not valid UTF-8")
                rows.append(row)
                continue
            if p.name.startswith("."):
                row.update(status="skipped", reason="hidden file")
            elif p.is_dir():
                row.update(status="skipped", reason="nested folder")
            elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                row.update(status="skipped", reason=f"not an image extension ({p.suffix or 'none'})")
            rows.append(row)
    return rows


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes to a ``size`` x ``size`` x 3 uint8 RGB array.

    EXIF orientation is applied; palette, grey, 16-bit, CMYK and alpha images
    become RGB (alpha composited on white); animated images use the first
    frame.  Raises ``ValueError`` with a short reason when it cannot.
    """
    from PIL import Image, ImageOps

    if not data:
        raise ValueError("empty file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"{im.width}x{im.height} pixels exceeds the {MAX_PIXELS} limit")
            if min(im.width, im.height) < MIN_SIDE:
                raise ValueError(f"too small ({im.width}x{im.height} pixels, minimum side {MIN_SIDE})")
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"decompression bomb guard: {exc}") from None
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"cannot decode ({type(exc).__name__}: {str(exc)[:80]})") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        im = Image.fromarray((arr * (255.0 / max(hi, 1.0))).clip(0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    im = im.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(im, dtype=np.uint8)


def _read_and_decode(path: Path, size: int):
    """``(sha256, image, None)`` or ``(sha256 or "", None, skip reason)`` for one file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", None, f"unreadable ({exc.strerror or type(exc).__name__})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        return digest, decode_image(data, size), None
    except ValueError as exc:
        return digest, None, str(exc)


def build_domain(spec: DomainSpec, classes: list[str], size: int, rows: list[dict] | None = None,
                 workers: int | None = None):
    """Decode every usable image of a domain.

    Files are read, hashed and decoded by ``workers`` threads (Pillow releases
    the GIL while decoding and resizing; default: one per CPU, at most 8); the
    result does not depend on ``workers``.

    Returns ``(rows, images)``: manifest rows (status/reason/sha256 filled) and
    an ``(n_ok, size, size, 3)`` uint8 array for the rows with status ``ok``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    rows = scan_folder(spec, classes) if rows is None else rows
    root = Path(spec.path)
    todo = [row for row in rows if row["status"] == "ok"]
    workers = workers or min(8, os.cpu_count() or 1)
    images = np.zeros((len(todo), size, size, 3), np.uint8)
    keep = np.zeros(len(todo), bool)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = pool.map(lambda row: _read_and_decode(root / row["image_id"], size), todo)
        for i, (row, (digest, image, reason)) in enumerate(
                tqdm(zip(todo, decoded), total=len(todo), desc=f"decode {root.name}", unit="img", mininterval=2.0)):
            row["sha256"] = digest
            if reason is None:
                images[i], keep[i] = image, True
            else:
                row.update(status="skipped", reason=reason)
    for row in rows:
        if row["status"] != "ok":
            log.warning("skipped %s: %s", root / row["image_id"], row["reason"])
    return rows, images[keep] if not keep.all() else images


MANIFEST_FIELDS = ["image_id", "class", "label", "sha256", "status", "reason"]


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write manifest rows as TSV (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, MANIFEST_FIELDS, delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def manifest_summary(manifests: dict) -> dict:
    """Kept/skipped counts, skipped files with reasons, and images present in both domains.

    ``manifests`` maps a domain name to its manifest path.  Identical files
    (same SHA-256) in source and target leak the target into training: they
    are reported (and logged as a warning), not removed.
    """
    rows = {d: read_manifest(p) for d, p in manifests.items()}
    out = {"kept": {}, "skipped": [], "duplicates": []}
    for d, rs in rows.items():
        out["kept"][d] = sum(r["status"] == "ok" for r in rs)
        out["skipped"] += [(d, r["image_id"], r["reason"]) for r in rs if r["status"] != "ok"]
    if {"source", "target"} <= rows.keys():
        src = {r["sha256"]: r["image_id"] for r in rows["source"] if r["status"] == "ok" and r["sha256"]}
        for r in rows["target"]:
            if r["status"] == "ok" and r["sha256"] in src:
                out["duplicates"].append((src[r["sha256"]], r["image_id"]))
        if out["duplicates"]:
            log.warning("%d target image(s) are identical to source images (first: source %s = target %s): "
                        "the target leaks into training", len(out["duplicates"]), *out["duplicates"][0])
    return out


def split_rows(rows: list[dict], test_size: float, seed: int) -> dict[str, list[dict]]:
    """Stratified, seeded split of scanned rows into ``source`` (train) and ``target`` (test)."""
    from sklearn.model_selection import train_test_split

    from collections import Counter

    ok = [r for r in rows if r["status"] == "ok"]
    labels = [r["label"] for r in ok]
    counts = Counter(r["class"] for r in ok)
    few = sorted(c for c, n in counts.items() if n < 2)
    if few:
        raise ValueError(f"class {few[0]!r} has {counts[few[0]]} usable image(s); a stratified split needs at "
                         f"least 2 per class: add images or drop the folder with class_map {{{few[0]!r}: null}}")
    n_test = int(np.ceil(test_size * len(ok))) if test_size < 1 else int(test_size)
    if n_test < len(counts) or len(ok) - n_test < len(counts):
        raise ValueError(f"split.test_size={test_size} leaves {n_test} of {len(ok)} images for the target; both "
                         f"sides need one image per class ({len(counts)} classes)")
    train, test = train_test_split(ok, test_size=test_size, random_state=seed, stratify=labels)
    skipped = [r for r in rows if r["status"] != "ok"]
    key = lambda r: r["image_id"]  # noqa: E731
    return {"source": sorted(train, key=key) + skipped, "target": sorted(test, key=key)}


def prepare_domain(domains: dict, domain: str, *, size: int, manifest_path, store_path,
                   keep: str = "common", split: dict | None = None) -> dict:
    """Scan, (split,) decode and store one domain of an experiment.

    ``domains`` is ``{"source": {"path", "class_map"}, "target": {...}}`` (no
    target when ``split`` is given).  Writes the manifest TSV and the image
    store; returns counts of kept and skipped images.
    """
    import json

    specs = {k: DomainSpec(v["path"], dict(v.get("class_map") or {})) for k, v in domains.items()}
    classes = resolve_classes(specs["source"], specs.get("target"), keep)
    if split:
        rows = split_rows(scan_folder(specs["source"], classes), split["test_size"], split["seed"])[domain]
        spec = specs["source"]
    else:
        spec = specs[domain]
        rows = scan_folder(spec, classes)
    rows, images = build_domain(spec, classes, size, rows)
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise ValueError(f"{spec.path}: no usable image for the {domain} domain "
                         f"(classes {classes}); see the manifest {manifest_path}")
    list_hash = hashlib.sha256("\n".join(f"{r['image_id']}\t{r['label']}\t{r['sha256']}"
                                         for r in ok).encode()).hexdigest()
    with atomic_path(store_path) as tmp, h5py.File(tmp, "w") as f:
        d = create_store(f, "images", images.shape, "uint8")
        d[...] = images
        write_meta(f, [r["label"] for r in ok], [r["image_id"] for r in ok],
                   {"classes": json.dumps(classes), "image_list_sha256": list_hash,
                    "domain": domain, "root": str(spec.path), "image_size": size})
    write_manifest(manifest_path, rows)
    return {"kept": len(ok), "skipped": len(rows) - len(ok), "classes": classes}
