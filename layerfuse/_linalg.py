"""Small dense linear-algebra helpers shared by the estimators."""
from __future__ import annotations

import numpy as np


def gram(a: np.ndarray, block: int = 4096) -> np.ndarray:
    """``a @ a.T``, symmetric, with half the flops of a general product.

    numpy hands ``a @ a.T`` to BLAS ``syrk``, and the OpenBLAS that numpy and
    scipy ship (0.3.31) segfaults in ``syrk`` from about 16,000 rows.  Blocks of
    ``block`` rows keep every ``syrk`` small: the diagonal blocks are ``syrk``,
    the rest of each block row a general product, mirrored below the diagonal.
    """
    n = a.shape[0]
    if n <= block:
        return a @ a.T
    out = np.empty((n, n), dtype=np.result_type(a.dtype, np.float32))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        out[lo:hi, lo:hi] = a[lo:hi] @ a[lo:hi].T
        if hi < n:
            out[lo:hi, hi:] = a[lo:hi] @ a[hi:].T
            out[hi:, lo:hi] = out[lo:hi, hi:].T
    return out


def sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, computed in place in one N x M buffer."""
    d = gram(a) if b is a else a @ b.T
    aa = np.einsum("ij,ij->i", a, a)
    bb = aa if b is a else np.einsum("ij,ij->i", b, b)
    d *= -2.0
    d += aa[:, None]
    d += bb[None, :]
    return np.maximum(d, 0.0, out=d)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * |a - b|²)`` with squared Euclidean distances (no temporaries beyond the result)."""
    k = sq_dists(a, b)
    k *= -gamma
    return np.exp(k, out=k)
