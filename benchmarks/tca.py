"""TCA speed, memory and accuracy: ours (exact, auto/Nyström) vs a plain dense solve vs skada.

    python benchmarks/tca.py [--sizes 2000 6000 20000] [--big 100000] [--components 256]

All timings in one run, as ratios against the baselines measured in the same run.
Data: CNN-like synthetic features (non-negative, decaying spectrum, 10 classes,
a shifted target) of 2048 dimensions; plus target accuracy on a real pair
(Office-Caltech Amazon->Webcam global features) when a finished
``results/officeaw`` run or ``../shared/data`` is present.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure  # noqa: E402


def cnn_like(n: int, d: int = 2048, seed: int = 0):
    """Non-negative features with a decaying spectrum; second half shifted as a 'target'."""
    rng = np.random.default_rng(seed)
    r = 64
    basis = rng.standard_normal((r, d)) / np.sqrt(d)
    scales = 1.0 / np.arange(1, r + 1) ** 0.7
    centers = rng.standard_normal((10, r)) * scales
    labels = rng.integers(0, 10, n)
    z = centers[labels] + 0.5 * rng.standard_normal((n, r)) * scales
    shift = np.r_[np.zeros(n // 2), np.ones(n - n // 2)][:, None] * 0.3 * rng.standard_normal(r) * scales
    x = np.maximum((z + shift) @ basis * 8 + 0.05 * rng.standard_normal((n, d)), 0)
    domain = np.r_[np.zeros(n // 2), -np.ones(n - n // 2)]
    return x.astype(np.float64), domain, labels


def plain_dense(x, domain, k, mu=1.0):
    """The textbook solve: eigh(K H K, K L K + mu I) on dense N x N matrices."""
    from scipy import linalg

    from layerfuse.tca import median_gamma, rbf_kernel

    n = len(x)
    K = rbf_kernel(x, x, median_gamma(x))
    src = domain >= 0
    e = np.where(src, 1 / src.sum(), -1 / (~src).sum())
    H = np.eye(n) - 1.0 / n
    L = np.outer(e, e)
    vals, vecs = linalg.eigh(K @ H @ K, K @ L @ K + mu * np.eye(n), subset_by_index=[n - k, n - 1])
    return vecs[:, ::-1]


def ours(x, domain, k, solver, **kw):
    from layerfuse.tca import TCA

    t = TCA(k, solver=solver, **{"bandwidth_factor": 1.0, **kw}).fit(x, sample_domain=domain)   # the median width
    return t.coef_ if t.coef_ is not None else t.embedding_


def skada_fit(x, domain, k):
    from skada import TransferComponentAnalysisAdapter

    y = np.where(domain >= 0, 0, -1)
    sample_domain = np.where(domain >= 0, 1, -2)
    TransferComponentAnalysisAdapter(n_components=k, kernel="rbf", mu=1.0).fit(x, y, sample_domain=sample_domain)
    return None


def angle(a, b):
    from scipy import linalg

    return float(linalg.subspace_angles(a, b).max())


def real_pair():
    path = Path("results/officeaw/fused/imagenet/global.h5")
    if not path.exists():
        return None
    from layerfuse.h5io import read_pair

    return read_pair(path)[:4]


def accuracy(pair, solver, k=64, **kw):
    from layerfuse.evaluate import evaluate_svm
    from layerfuse.tca import TCA, stack_domains

    xs, xt, ys, yt = pair
    x, dom = stack_domains(xs, xt)
    z = TCA(k, solver=solver, **{"bandwidth_factor": 1.0, **kw}).fit_transform(x, sample_domain=dom)
    return evaluate_svm(z[:len(xs)], ys, z[len(xs):], yt, center="none")[0]["accuracy"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 6000])
    p.add_argument("--big", type=int, default=100000, help="Nyström-only size (0 to skip)")
    p.add_argument("--components", type=int, default=256)
    p.add_argument("--dense-max", type=int, default=6000, help="largest N for the plain dense reference")
    args = p.parse_args(argv)
    try:
        import skada  # noqa: F401
        have_skada = True
    except ImportError:
        have_skada = False
        print("skada not installed: `pip install skada==0.6.0` into this environment to compare")
    k = args.components
    print(f"{'N':>7} {'method':<22} {'seconds':>9} {'peak MB':>9} {'vs dense':>9} {'vs skada':>9} {'angle':>9}")
    for n in args.sizes:
        x, dom, _ = cnn_like(n)
        rows = {}
        if n <= args.dense_max:
            rows["plain dense eigh"] = measure(plain_dense, x, dom, k)
        if have_skada and n <= args.dense_max:
            rows["skada 0.6"] = measure(skada_fit, x, dom, k)
        rows["ours exact"] = measure(ours, x, dom, k, "exact")
        rows["ours auto"] = measure(ours, x, dom, k, "auto")
        ref = rows.get("plain dense eigh", (np.nan, np.nan, None))
        sk = rows.get("skada 0.6", (np.nan, np.nan, None))
        for name, (sec, mb, res) in rows.items():
            ang = angle(res, ref[2]) if name == "ours exact" and isinstance(ref[2], np.ndarray) \
                and isinstance(res, np.ndarray) else float("nan")
            err = f"  ({res})" if isinstance(res, str) else ""
            print(f"{n:>7} {name:<22} {sec:>9.2f} {mb:>9.0f} {ref[0] / sec:>9.2f} {sk[0] / sec:>9.2f} {ang:>9.1e}{err}",
                  flush=True)
    if args.big:
        x, dom, _ = cnn_like(args.big)
        sec, mb, res = measure(ours, x, dom, min(k, 256), "nystroem")
        print(f"{args.big:>7} {'ours nystroem (m=1000)':<22} {sec:>9.2f} {mb:>9.0f}"
              + (f"  ({res})" if isinstance(res, str) else ""), flush=True)
    pair = real_pair()
    if pair is None:
        print("real pair: run `snakemake --configfile config/presets/office_amazon_webcam.yaml` first")
        return
    n = len(pair[0]) + len(pair[1])
    for kk in (256, 64):
        exact = accuracy(pair, "exact", kk)
        nys = accuracy(pair, "nystroem", kk)
        print(f"Amazon->Webcam global, N={n}, {kk} components: exact {exact:.4f}, "
              f"Nyström(m=1000) {nys:.4f}, difference {100 * (nys - exact):+.2f} points")


if __name__ == "__main__":
    main()
