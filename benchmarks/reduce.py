"""Local reductions (PCA, flatten pooling, pooling 2D), naive vs ours, in one run.

    python benchmarks/reduce.py [--images 600] [--layer block1] [--data ../shared/data/corel1000]

The block maps come from real images (``--data``, else synthetic photos) through
the workflow's own extraction (``layer1.0``: 256 x 55 x 55 = 774,400 values per
image, float16 + zstd on disk), split 80/20 into source and target.

* naive PCA: load both domains into memory as float32 and run scikit-learn's
  ``PCA(n_components)`` (its ``auto`` solver) fitted on the source;
* ours PCA: :class:`layerfuse.reduce.GramPCA` streaming channel blocks from the
  stores (``X_s X_sᵀ``, ``X_t X_sᵀ``), memory one block plus n x n numbers;
* naive flatten / pool2d: load everything, then reduce; ours: reduce blocks of
  images straight from the store.

Prints seconds, peak RSS, the ratio against naive, the agreement of the results
(PCA: largest principal angle between the target score subspaces; pooling:
max abs difference) and the fraction of the machine's peak for PCA, estimated as
the Gram products' FLOP (2 n_s (n_s + n_t) d) per second over the GFLOP/s of a
2048^3 float32 matrix product measured in the same run.  Peak RSS for a larger
set extrapolates as: naive ~ 4 n d bytes (x2 while PCA centres a copy), ours ~
``block_memory_mb`` + 8 n^2 bytes + the interpreter.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import image_parser, measure  # noqa: E402
from extract import _dataset, _default_compression, _model, peak_gflops  # noqa: E402


def build_stores(folder: Path, tmp: Path, node: str, compression: str) -> dict:
    """Image store -> one block store, split 80/20 (first 80% of a seeded permutation) into two stores."""
    import h5py

    from layerfuse.extract import extract_features
    from layerfuse.h5io import open_feature_store
    from layerfuse.images import prepare_domain

    prepare_domain({"source": {"path": str(folder)}}, "source", size=224, manifest_path=tmp / "m.tsv",
                   store_path=tmp / "images.h5")
    model, spec = _model(tmp)
    extract_features(tmp / "images.h5", {"maps": tmp / "all.h5"}, layers={"maps": node}, model=model, spec=spec,
                     threads=2, compression=compression)
    with h5py.File(tmp / "all.h5", "r") as f:
        d = f["features"]
        n = d.shape[0]
        order = np.random.default_rng(0).permutation(n)
        parts = {"source": np.sort(order[: int(0.8 * n)]), "target": np.sort(order[int(0.8 * n):])}
        for name, idx in parts.items():
            g, out = open_feature_store(tmp / f"{name}.h5", (len(idx),) + d.shape[1:], d.dtype, compression)
            with g:
                for lo in range(0, len(idx), 32):
                    out[lo:lo + 32] = d[idx[lo:lo + 32]]
                g.create_dataset("labels", data=np.zeros(len(idx), np.int64))
    return {name: tmp / f"{name}.h5" for name in ("source", "target")}


def _load(path) -> np.ndarray:
    import h5py
    import hdf5plugin  # noqa: F401  the stores' Blosc filter (what a user's own script must import too)

    with h5py.File(path, "r") as f:
        return f["features"][()].astype(np.float32)


def naive(method: str, stores: dict, n_components: int):
    xs, xt = _load(stores["source"]), _load(stores["target"])
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(n_components, len(xs) - 1), random_state=0).fit(xs.reshape(len(xs), -1))
        return pca.transform(xt.reshape(len(xt), -1))
    from layerfuse.reduce import flatten_pool, pool2d

    fn = flatten_pool if method == "flatten" else pool2d
    return np.concatenate([fn(xs), fn(xt)])


def ours(method: str, stores: dict, n_components: int):
    from layerfuse.reduce import reduce_store_pair

    params = {"n_components": n_components} if method == "pca" else {}
    out = reduce_store_pair(stores["source"], stores["target"], method, params)
    return out["target"] if method == "pca" else np.concatenate([out["source"], out["target"]])


def agreement(method: str, a: np.ndarray, b: np.ndarray) -> str:
    if method == "pca":
        from scipy.linalg import subspace_angles

        k = min(a.shape[1], b.shape[1], 64)  # the leading components; the tail is noise-level in both
        return f"angle(top {k}) {np.max(subspace_angles(a[:, :k].astype(np.float64), b[:, :k].astype(np.float64))):.1e} rad"
    return f"max |diff| {np.max(np.abs(a - b)):.1e}"


def main(argv=None):
    p = image_parser(__doc__, 600)
    p.add_argument("--layer", default="layer1.0", help="torchvision node of the block maps")
    p.add_argument("--components", type=int, default=256)
    p.add_argument("--compression", default=None, help="store of the maps (default: the workflow's)")
    args = p.parse_args(argv)
    compression = args.compression or _default_compression()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = _dataset(args.data, args.images, tmp)
        stores = measure(build_stores, folder, tmp, args.layer, compression)[2]
        if isinstance(stores, str):
            sys.exit(f"could not build the stores: {stores}")
        import h5py

        with h5py.File(stores["source"], "r") as fs, h5py.File(stores["target"], "r") as ft:
            ns, nt, d = fs["features"].shape[0], ft["features"].shape[0], int(np.prod(fs["features"].shape[1:]))
        disk = sum(Path(s).stat().st_size for s in stores.values()) / (ns + nt) / 1e6
        peak = measure(peak_gflops, "fp32")[2]
        print(f"{ns} source + {nt} target images x {d} values ({args.layer}); store ({compression}) "
              f"{disk:.2f} MB/image on disk; float32 in memory {4 * (ns + nt) * d / 2**30:.1f} GiB; "
              f"machine peak {peak:.0f} GFLOP/s fp32")
        print(f"{'method':<9} {'naive s':>8} {'ours s':>8} {'x naive':>8} {'naive MB':>9} {'ours MB':>8} "
              f"{'% of peak':>9}  agreement")
        for method in ("pca", "flatten", "pool2d"):
            t0, m0, r0 = measure(naive, method, stores, args.components)
            t1, m1, r1 = measure(ours, method, stores, args.components)
            if isinstance(r0, str) or isinstance(r1, str):
                print(f"{method:<9} failed: naive {r0 if isinstance(r0, str) else 'ok'}, "
                      f"ours {r1 if isinstance(r1, str) else 'ok'}")
                continue
            frac = f"{100 * 2 * ns * (ns + nt) * d / t1 / 1e9 / peak:8.1f}%" if method == "pca" else f"{'':>9}"
            print(f"{method:<9} {t0:>8.1f} {t1:>8.1f} {t0 / t1:>8.2f} {m0:>9.0f} {m1:>8.0f} {frac}  "
                  f"{agreement(method, r0, r1)}")


if __name__ == "__main__":
    main()
