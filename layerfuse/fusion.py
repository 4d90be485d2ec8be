"""Fusion: concatenate a reduced local block with the global vector.

The paper concatenates without saying how the parts are scaled.  Raw parts
differ by orders of magnitude (PCA scores of 774k-d maps vs 2048 pooled
activations), so whichever is larger decides every RBF distance.  Options:

``block-rms`` (default)
    divide each block by the root-mean-square row norm of its *source* rows:
    every block then has mean squared norm 1, so local and global weigh the
    same, and within-block geometry is untouched.
``l2``
    L2-normalise each block per image.
``none``
    raw concatenation (the literal reading of the paper).
"""
from __future__ import annotations

import numpy as np

__all__ = ["SCALINGS", "scale_block", "fuse"]

SCALINGS = ("block-rms", "l2", "none")


def scale_block(source: np.ndarray, target: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale one block's source and target rows (statistics from the source only)."""
    source = np.asarray(source, dtype=np.float32)
    target = np.asarray(target, dtype=np.float32)
    if scaling == "none":
        return source, target
    if scaling == "block-rms":
        rms = float(np.sqrt(np.mean(np.sum(source.astype(np.float64) ** 2, axis=1))))
        rms = rms if rms > 0 else 1.0
        return source / rms, target / rms
    if scaling == "l2":
        def unit(a):
            norm = np.linalg.norm(a, axis=1, keepdims=True)
            return a / np.where(norm > 0, norm, 1.0)
        return unit(source), unit(target)
    raise ValueError(f"unknown fusion scaling {scaling!r}; use one of {SCALINGS}")


def fuse(blocks: list[tuple[np.ndarray, np.ndarray]], scaling: str = "block-rms") -> tuple[np.ndarray, np.ndarray]:
    """Concatenate scaled ``(source, target)`` blocks column-wise."""
    if not blocks:
        raise ValueError("fuse needs at least one block")
    scaled = [scale_block(s, t, scaling) for s, t in blocks]
    return (np.concatenate([s for s, _ in scaled], axis=1),
            np.concatenate([t for _, t in scaled], axis=1))
