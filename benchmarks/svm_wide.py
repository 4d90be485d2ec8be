"""The linear SVM where the source has a little more images than features: the dense Newton method
(``svm.solver: auto``'s choice there) against liblinear's dual (``LinearSVC(dual=True)``), in one run.

    python benchmarks/svm_wide.py [--images 5000] [--width 4048] [--classes 10] [--threads 1]

A generated source like a flatten feature set's: the first 2,048 columns Gaussian classes whose means are
about 2 noise spreads apart (overlapping, as real global features' classes are), the rest noise, centred;
``--images`` rows, class weights balanced, C = 1, tol 1e-4 (the workflow's).  Prints, for each method, its
seconds, its iterations (Newton steps, with the products with the features they took; liblinear's
iterations), its objective (liblinear's, summed over the one-vs-rest problems) and how many of 2,000 new
images of the same classes both methods label alike.  Each method runs on ``--threads`` BLAS threads (one:
the workflow's jobs).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_class_weight
from threadpoolctl import threadpool_limits

from layerfuse import svm as svm_module
from layerfuse.svm import LinearSVM

GLOBAL_WIDTH = 2048


def make_source(n: int, width: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2 / np.sqrt(2 * GLOBAL_WIDTH), (classes, GLOBAL_WIDTH)).astype(np.float32)

    def draw(rows):
        y = rng.integers(0, classes, rows)
        x = rng.standard_normal((rows, width), dtype=np.float32)
        x[:, :GLOBAL_WIDTH] += means[y]
        return x, y

    (xs, ys), (xn, _) = draw(n), draw(2000)
    mean = xs.mean(axis=0)
    return xs - mean, ys, xn - mean


def objective(coef, intercept, x, y) -> float:
    """liblinear's primal objective (squared hinge, regularised intercept, balanced weights), summed over the
    one-vs-rest problems."""
    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    scores = x @ coef.T + intercept
    total = 0.0
    for k, c in enumerate(classes):
        sign = np.where(y == c, 1.0, -1.0)
        cost = np.where(y == c, weights[k], 1.0)
        slack = np.maximum(0.0, 1.0 - sign * scores[:, k])
        total += 0.5 * (float(coef[k] @ coef[k]) + float(intercept[k]) ** 2) + float((cost * slack * slack).sum())
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000, help="source images (rows)")
    p.add_argument("--width", type=int, default=4048, help="features (columns), at least 2,048")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    xs, ys, xn = make_source(args.images, max(args.width, GLOBAL_WIDTH), args.classes)
    products = []
    plain_x = svm_module._x

    def counted_x(x, v):                       # the Newton method's products x @ v, counted
        products.append(1)
        return plain_x(x, v)

    results = {}
    with threadpool_limits(limits=args.threads, user_api="blas"):
        svm_module._x = counted_x
        try:
            start = time.perf_counter()
            newton = LinearSVM(solver="newton").fit(xs, ys)
            results["newton"] = (time.perf_counter() - start, f"{newton.n_iter_} steps, {2 * len(products)} products",
                                 newton.coef_, newton.intercept_)
        finally:
            svm_module._x = plain_x
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dual = LinearSVC(dual=True, class_weight="balanced", max_iter=20000, tol=1e-4).fit(xs, ys)
        results["liblinear dual"] = (time.perf_counter() - start, f"{dual.n_iter_} iterations", dual.coef_,
                                     dual.intercept_)
    print(f"{args.images} source images x {xs.shape[1]} features, {args.classes} classes, {args.threads} thread(s)")
    for name, (seconds, iterations, coef, intercept) in results.items():
        print(f"  {name:<15} {seconds:7.1f} s  {iterations:<28} objective {objective(coef, intercept, xs, ys):.6g}")
    labels = [(xn @ coef.T + intercept).argmax(axis=1) for _, _, coef, intercept in results.values()]
    print(f"  Newton / liblinear's dual: {results['newton'][0] / results['liblinear dual'][0]:.2f}x the time; "
          f"{(labels[0] == labels[1]).mean():.1%} of 2,000 new images labelled alike")
    return 0


if __name__ == "__main__":
    sys.exit(main())
