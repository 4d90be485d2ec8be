"""Datasets as folders: scan, map classes, hash, decode once into uint8 tensors.

A dataset is a directory of ``<class>/<image>`` files.  An experiment takes a
source and a target dataset (or one dataset split into both) and an optional
class map per domain: ``{folder: class}`` merges folders into one class, a
``null`` value drops a folder, and ``classes: common`` keeps only classes both
domains have.  Unreadable files are skipped with a reason recorded in the
manifest; problems the user must fix raise ``ValueError`` naming the path.

Reading is guarded: only regular files are opened (a FIFO or device is
skipped, never read), a file larger than ``max_file_mb`` is skipped before it
is read, symlinks are followed only when they resolve inside the dataset
folder, and Pillow may only pick the formats of :data:`IMAGE_FORMATS`
whatever the file's content claims.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import stat
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from .h5io import NO_CHUNK_CACHE, atomic_path, create_store, write_meta

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
# The Pillow decoders layerfuse lets run (JPEG includes multi-picture JPEGs from cameras); no other
# plugin is tried, so an EPS or PDF named .jpg never reaches Ghostscript.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
MAX_PIXELS = 64_000_000  # decompression-bomb guard: ~8000x8000
MAX_FILE_MB = 64  # files above this are skipped unread (schema default of images.max_file_mb)
# Peak bytes one decode may take (RGBA at MAX_PIXELS plus a copy): bounds the decode threads.
DECODE_PEAK_BYTES = MAX_PIXELS * 8
MIN_SIDE = 8  # smaller images carry no usable content at 224 px


@dataclass(frozen=True)
class DomainSpec:
    """One side of an experiment: a folder and how its sub-folders map to classes."""

    path: str
    class_map: dict = field(default_factory=dict)
    labelled: bool = True

    @classmethod
    def from_config(cls, domain: dict) -> "DomainSpec":
        """From a config's ``{path, class_map, labels}`` (``labels: none``: an unlabelled target)."""
        return cls(domain["path"], dict(domain.get("class_map") or {}), domain.get("labels", "folders") != "none")

    def folder_classes(self) -> dict[str, str | None]:
        """{folder name: class name or None (dropped)} for every class folder present ({} when unlabelled)."""
        root = Path(self.path)
        if root.exists() and not root.is_dir():
            raise ValueError(f"dataset folder {root} is a file, not a folder")
        if not root.is_dir():
            raise ValueError(f"dataset folder not found: {root}")
        if not self.labelled:
            return {}
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for name in self.class_map:
            if name not in folders:
                raise ValueError(f"class_map names folder {name!r}, which {root} does not have "
                                 f"(it has: {', '.join(folders[:12])})")
        return {name: self.class_map.get(name, name) for name in folders}


def resolve_classes(source: DomainSpec, target: DomainSpec | None, keep: str = "common") -> list[str]:
    """Sorted class names used by an experiment (``common`` to both domains, or ``all`` source classes)."""
    src = {c for c in source.folder_classes().values() if c is not None}
    if target is None or not target.labelled:
        if target is not None:
            target.folder_classes()                             # checks the folder exists
        return sorted(src)
    tgt = {c for c in target.folder_classes().values() if c is not None}
    classes = sorted(src & tgt) if keep == "common" else sorted(src)
    if not classes:
        raise ValueError(f"source {source.path} and target {target.path} share no class "
                         f"(source: {sorted(src)[:8]}, target: {sorted(tgt)[:8]}); add a class_map")
    return classes


def dropped_class_rows(specs: dict, domain: str, classes: list[str]) -> list[dict]:
    """Manifest rows (status ``dropped``) for every class folder of ``domain`` that the experiment does not use.

    Reasons: hidden folder, ``null`` in the class map, a class the other domain
    lacks, an empty folder.  Nothing is dropped without a row: the log and the
    report's Data section list them.
    """
    spec = specs[domain]
    root = Path(spec.path)
    other = specs.get("target" if domain == "source" else "source")
    rows = []
    if not spec.labelled:
        return rows

    def drop(folder, cls, reason):
        rows.append({"image_id": f"{folder}/", "class": cls or "", "label": -1, "sha256": "",
                     "status": "dropped", "reason": reason})

    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") and p.is_dir():
            drop(p.name, "", "hidden class folder")
    for folder, cls in spec.folder_classes().items():
        if cls is None:
            drop(folder, "", "dropped by class_map (null)")
        elif cls not in classes:
            where = "the source" if domain == "target" else "the target"
            drop(folder, cls, f"class {cls!r} is not in {where}" if other is not None else "class not used")
        if cls is not None and cls in classes and not any(True for _ in (root / folder).iterdir()):
            drop(folder, cls, "empty class folder")
    return rows


def _file_row(p: Path, image_id: str, cls: str, label: int) -> dict:
    """A manifest row for one directory entry: ``ok`` so far, or skipped with the reason."""
    row = {"image_id": image_id, "class": cls, "label": label, "sha256": "", "status": "ok", "reason": ""}
    try:
        p.name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name (surrogate escapes)
        row.update(image_id=image_id.encode("utf-8", "backslashreplace").decode(),
                   status="skipped", reason="file name is not valid UTF-8")
        return row
    if p.name.startswith("."):
        row.update(status="skipped", reason="hidden folder" if p.is_dir() else "hidden file")
    elif p.is_symlink() and p.is_dir():
        row.update(status="skipped", reason="symlinked folder (not followed)")
    elif p.is_dir():
        row.update(status="skipped", reason="nested folder")
    elif p.suffix.lower() not in IMAGE_EXTENSIONS:
        row.update(status="skipped", reason=f"not an image extension ({p.suffix or 'none'})")
    return row


def _scan_unlabelled(root: Path) -> list[dict]:
    """Every file anywhere below ``root`` (folder names ignored), label -1; hidden and symlinked
    folders are not entered (each gets a skipped row)."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if name.startswith(".") or (here / name).is_symlink():
                dirnames.remove(name)
                rows.append(_file_row(here / name, (here / name).relative_to(root).as_posix() + "/", "", -1))
        for name in filenames:
            rows.append(_file_row(here / name, (here / name).relative_to(root).as_posix(), "", -1))
    return sorted(rows, key=lambda r: r["image_id"])


def scan_folder(spec: DomainSpec, classes: list[str]) -> list[dict]:
    """Every file under the class folders (anywhere below the folder when unlabelled), with its class
    label (-1 when unlabelled) or a skip reason."""
    root = Path(spec.path)
    if not spec.labelled:
        spec.folder_classes()                                   # checks the folder
        return _scan_unlabelled(root)
    rows = []
    index = {c: i for i, c in enumerate(classes)}
    for folder, cls in spec.folder_classes().items():
        if cls is None or cls not in index:
            continue
        # an empty class folder gets a ``dropped`` row (dropped_class_rows), logged by prepare_domain
        files = sorted((root / folder).iterdir(), key=lambda p: p.name)
        rows += [_file_row(p, f"{folder}/{p.name}", cls, index[cls]) for p in files]
    return rows


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes to a ``size`` x ``size`` x 3 uint8 RGB array.

    EXIF orientation is applied; palette, grey, 16-bit, CMYK and alpha images
    become RGB (alpha composited on white); animated images use the first
    frame.  Raises ``ValueError`` with a short reason when it cannot.
    """
    if not data:
        raise ValueError("empty file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    Image.init()  # registers every plugin, so each of IMAGE_FORMATS can be named
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
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
    except Image.UnidentifiedImageError:
        raise ValueError(f"cannot decode (not one of the formats {', '.join(IMAGE_FORMATS)})") from None
    except MemoryError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"cannot decode ({type(exc).__name__}: {_stable(str(exc))[:80]})") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = _deep_to_grey(im)
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


def resolves_inside(path, root) -> bool:
    """Whether ``path``, symlinks resolved, lies inside ``root`` (the symlink policy of layerfuse's reads)."""
    real, inside = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, inside]) == inside


def _stable(text: str) -> str:
    """``text`` without object addresses (``<_io.BytesIO object at 0x7f…>``), so reasons repeat run to run."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<file>", text)


def _deep_to_grey(im):
    """A 16/32-bit grey image as 8-bit ``L``, scaled by its maximum, in row strips (no float64 copy)."""
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I": "<i4"}[im.mode]
    # a view of Pillow's bytes: np.asarray(im) would hold a second copy
    arr = np.frombuffer(im.tobytes(), dtype=dtype).reshape(im.height, im.width)
    hi = max(int(arr.max()) if arr.size else 1, 1)
    out = np.empty(arr.shape, np.uint8)
    step = max(1, (1 << 20) // max(arr.shape[1], 1))          # ~1M pixels a strip
    for lo in range(0, arr.shape[0], step):
        strip = np.clip(arr[lo:lo + step], 0, None).astype(np.int64)
        out[lo:lo + step] = np.minimum(strip * 255 // hi, 255)
    return Image.fromarray(out, "L")


def read_image_bytes(path: Path, root: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file inside ``root`` of at most ``max_bytes``.

    Raises ``ValueError`` with a short skip reason otherwise.  A symlink is
    followed only when it resolves inside ``root``; the file is opened
    non-blocking and checked with ``fstat`` before any read, so a FIFO,
    socket or device is refused without hanging and ``/dev/zero`` or a huge
    sparse file is never read.
    """
    if os.path.islink(path):
        if not os.path.exists(path):
            raise ValueError("unreadable (dangling symlink)")
        if not resolves_inside(path, root):
            raise ValueError("symlink to a file outside the dataset folder (not followed)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror or type(exc).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                    else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file")
            raise ValueError(f"not a regular file ({kind})")
        if st.st_size > max_bytes:
            raise ValueError(f"file of {st.st_size / 2**20:.1f} MB exceeds images.max_file_mb "
                             f"({max_bytes / 2**20:g} MB)")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise ValueError(f"file grew past images.max_file_mb ({max_bytes / 2**20:g} MB) while read")
        return b"".join(chunks)
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)


def _read_and_decode(path: Path, root: Path, size: int, max_bytes: int):
    """``(sha256, image, None)`` or ``(sha256 or "", None, skip reason)`` for one file.

    A ``MemoryError`` becomes a ``ValueError`` naming the file: a skip would make
    the image set depend on the machine's free memory.
    """
    try:
        data = read_image_bytes(path, root, max_bytes)
    except ValueError as exc:
        return "", None, str(exc)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return digest, decode_image(data, size), None
    except ValueError as exc:
        return digest, None, str(exc)
    except MemoryError:
        raise ValueError(f"{path}: out of memory while decoding it ({len(data)} bytes); give prepare_images "
                         "more memory (resources.mem_mb) or remove the file") from None


def decode_workers(memory_mb: float | None = None) -> int:
    """Decode threads: one per CPU, at most 8, and no more than ``memory_mb`` holds at a decode's peak."""
    workers = min(8, os.cpu_count() or 1)
    if memory_mb is not None:
        workers = min(workers, max(1, int(memory_mb * 2**20 // DECODE_PEAK_BYTES)))
    return workers


def build_domain(spec: DomainSpec, classes: list[str], size: int, rows: list[dict] | None = None,
                 workers: int | None = None, max_file_mb: float = MAX_FILE_MB, out=None, block: int = 256):
    """Decode every usable image of a domain, ``block`` images at a time.

    Files are read, hashed and decoded by ``workers`` threads (Pillow releases
    the GIL while decoding and resizing; default: :func:`decode_workers`); the
    result does not depend on ``workers``.

    Returns ``(rows, images)``: manifest rows (status/reason/sha256 filled) and
    an ``(n_ok, size, size, 3)`` uint8 array for the rows with status ``ok``.  With ``out`` (an
    array or dataset with a row for every usable row) the decoded images go into its first rows as
    they come, at most ``block`` of them in memory, and ``images`` is their count.
    """
    rows = scan_folder(spec, classes) if rows is None else rows
    root = Path(spec.path)
    todo = [row for row in rows if row["status"] == "ok"]
    workers = workers or decode_workers()
    max_bytes = int(max_file_mb * 2**20)
    target = np.zeros((len(todo), size, size, 3), np.uint8) if out is None else out
    kept = 0
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(todo), desc=f"decode {root.name}", unit="img", mininterval=2.0) as bar:
        for start in range(0, len(todo), block):
            chunk = todo[start:start + block]
            for row, (digest, image, reason) in zip(
                    chunk, pool.map(lambda r: _read_and_decode(root / r["image_id"], root, size, max_bytes), chunk)):
                row["sha256"] = digest
                if reason is None:
                    target[kept] = image
                    kept += 1
                else:
                    row.update(status="skipped", reason=reason)
            bar.update(len(chunk))
    for row in rows:
        if row["status"] != "ok":
            log.warning("skipped %s: %s", root / row["image_id"], row["reason"])
    return rows, (kept if out is not None else target[:kept])


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


def manifest_classes(*manifests) -> list[str]:
    """Class names indexed by label, from the usable rows of an experiment's manifests."""
    names = {}
    for path in manifests:
        for r in read_manifest(path):
            if r["status"] == "ok" and int(r["label"]) >= 0:
                names[int(r["label"])] = r["class"]
    return [names.get(i, f"class{i}") for i in range(max(names) + 1)] if names else []


def manifest_summary(manifests: dict) -> dict:
    """Kept/skipped counts, skipped files with reasons, and images present in both domains.

    ``manifests`` maps a domain name to its manifest path.  Identical files
    (same SHA-256) in source and target leak the target into training: they
    are reported (and logged as a warning), not removed.
    """
    rows = {d: read_manifest(p) for d, p in manifests.items()}
    out = {"kept": {}, "skipped": [], "duplicates": [], "dropped": [], "few": []}
    for d, rs in rows.items():
        out["kept"][d] = sum(r["status"] == "ok" for r in rs)
        out["skipped"] += [(d, r["image_id"], r["reason"]) for r in rs if r["status"] == "skipped"]
        out["dropped"] += [(d, r["image_id"], r["reason"]) for r in rs if r["status"] == "dropped"]
        counts = {}
        for r in rs:
            if r["status"] != "dropped" and r["label"] != "-1":      # -1: an unlabelled target
                counts[r["class"]] = counts.get(r["class"], 0) + (r["status"] == "ok")
        out["few"] += [(d, c, n) for c, n in sorted(counts.items()) if n < 2]
    if {"source", "target"} <= rows.keys():
        src = {r["sha256"]: r["image_id"] for r in rows["source"] if r["status"] == "ok" and r["sha256"]}
        for r in rows["target"]:
            if r["status"] == "ok" and r["sha256"] in src:
                out["duplicates"].append((src[r["sha256"]], r["image_id"]))
        if out["duplicates"]:
            log.warning("%d target image(s) are identical to source images (first: source %s = target %s): "
                        "the target leaks into training", len(out["duplicates"]), *out["duplicates"][0])
    return out


def split_rows(rows: list[dict], test_size: float = 0.2, seed: int = 0) -> dict[str, list[dict]]:
    """Stratified, seeded split of scanned rows into ``source`` (train) and ``target`` (test)."""
    from sklearn.model_selection import train_test_split  # scikit-learn (0.5 s): only a split of one dataset

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


def _check_usable(spec: DomainSpec, ok: list[dict], classes: list[str], domain: str, manifest_path) -> None:
    """One error line where a domain has no usable image or a source fewer than 2 classes; a warning for a
    class with fewer than 2 images."""
    if not ok:
        raise ValueError(f"{spec.path}: no usable image for the {domain} domain "
                         f"(classes {classes}); see the manifest {manifest_path}")
    if spec.labelled:
        counts = {c: sum(r["class"] == c for r in ok) for c in classes}
        for cls, n in counts.items():
            if n < 2:
                log.warning("%s: class %r has %d usable image(s) in the %s domain", spec.path, cls, n, domain)
        present = [c for c, n in counts.items() if n]
        if domain == "source" and len(present) < 2:
            raise ValueError(f"{spec.path}: the source has usable images of {len(present)} class(es) "
                             f"({', '.join(present) or 'none'}); a classifier needs at least 2; see the manifest "
                             f"{manifest_path}")


def prepare_domain(domains: dict, domain: str, *, size: int, manifest_path, store_path,
                   keep: str = "common", split: dict | None = None, max_file_mb: float = MAX_FILE_MB,
                   memory_mb: float | None = None) -> dict:
    """Scan, (split,) decode and store one domain of an experiment.

    ``domains`` is ``{"source": {"path", "class_map"}, "target": {...}}`` (no
    target when ``split`` is given).  Writes the manifest TSV and the image
    store; returns counts of kept and skipped images.
    """
    specs = {k: DomainSpec.from_config(v) for k, v in domains.items()}
    classes = resolve_classes(specs["source"], specs.get("target"), keep)
    if split:
        rows = split_rows(scan_folder(specs["source"], classes), split["test_size"], split["seed"])[domain]
        spec = specs["source"]
        dropped = dropped_class_rows(specs, "source", classes) if domain == "source" else []
    else:
        spec = specs[domain]
        rows = scan_folder(spec, classes)
        dropped = dropped_class_rows(specs, domain, classes)
    for row in dropped:
        log.warning("dropped class folder %s: %s", Path(spec.path) / row["image_id"], row["reason"])
    usable = sum(r["status"] == "ok" for r in rows)
    # decoded images go to the store as they come (a domain's images need not fit in memory); a check
    # that fails below leaves no store, as atomic_path removes the partial file
    with atomic_path(store_path) as tmp, h5py.File(tmp, "w", **NO_CHUNK_CACHE) as f:
        d = create_store(f, "images", (usable, size, size, 3), "uint8")
        rows, kept = build_domain(spec, classes, size, rows, workers=decode_workers(memory_mb),
                                  max_file_mb=max_file_mb, out=d)
        if kept < usable:
            d.resize(kept, axis=0)                       # per-image chunks: those never written are not stored
        ok = [r for r in rows if r["status"] == "ok"]
        _check_usable(spec, ok, classes, domain, manifest_path)
        list_hash = hashlib.sha256("\n".join(f"{r['image_id']}\t{r['label']}\t{r['sha256']}"
                                             for r in ok).encode()).hexdigest()
        write_meta(f, [r["label"] for r in ok], [r["image_id"] for r in ok],
                   {"classes": json.dumps(classes), "image_list_sha256": list_hash,
                    "domain": domain, "root": str(spec.path), "image_size": size})
    write_manifest(manifest_path, dropped + rows)
    return {"kept": len(ok), "skipped": len(rows) - len(ok), "classes": classes,
            "dropped": [r["image_id"].rstrip("/") for r in dropped]}
