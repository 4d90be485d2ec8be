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

__all__ = ["SCALINGS", "block_scale", "apply_scale", "scale_block", "fuse"]

SCALINGS = ("block-rms", "l2", "none")


def block_scale(source: np.ndarray, scaling: str) -> float | None:
    """The divisor ``block-rms`` applies to a block (from its source rows); None for per-image scalings."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown fusion scaling {scaling!r}; use one of {SCALINGS}")
    if scaling != "block-rms":
        return None
    rms = float(np.sqrt(np.mean(np.sum(np.asarray(source, np.float64) ** 2, axis=1))))
    return rms if rms > 0 else 1.0


def apply_scale(block: np.ndarray, scaling: str, scale: float | None) -> np.ndarray:
    """Scale rows of a block as :func:`scale_block` did (``scale`` from :func:`block_scale`)."""
    block = np.asarray(block, dtype=np.float32)
    if scaling == "block-rms":
        return block / scale
    if scaling == "l2":
        norm = np.linalg.norm(block, axis=1, keepdims=True)
        return block / np.where(norm > 0, norm, 1.0)
    return block


def scale_block(source: np.ndarray, target: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale one block's source and target rows (statistics from the source only)."""
    scale = block_scale(source, scaling)
    return apply_scale(source, scaling, scale), apply_scale(target, scaling, scale)


def fuse(blocks: list[tuple[np.ndarray, np.ndarray]], scaling: str = "block-rms") -> tuple[np.ndarray, np.ndarray]:
    """Concatenate scaled ``(source, target)`` blocks column-wise."""
    if not blocks:
        raise ValueError("fuse needs at least one block")
    scaled = [scale_block(s, t, scaling) for s, t in blocks]
    return (np.concatenate([s for s, _ in scaled], axis=1),
            np.concatenate([t for _, t in scaled], axis=1))
