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

import json
import os
from pathlib import Path

import numpy as np

from .h5io import read_pair
from .layout import store_pair

__all__ = ["SCALINGS", "block_scale", "apply_scale", "scale_block", "fuse", "fuse_stores"]

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


def fuse_stores(global_source, global_target, local_pair, scaling: str, out, source_manifest=None,
                target_manifest=None, local_stores=None, global_pair=None):
    """``(xs, xt, ys, yt, attrs)`` of :func:`layerfuse.stages.fuse_features`'s pair file ``out`` (see there):
    the scaled blocks side by side and what :func:`layerfuse.h5io.read_pair` needs to read them."""
    if global_pair is not None:
        if local_pair is None and local_stores is None:
            raise ValueError(f"{out}: global_pair extends a local block, and none was given")
        gs, gt, ys, yt, global_attrs = read_pair(global_pair)              # scaled already
        if global_attrs.get("scaling") != scaling or int(global_attrs.get("blocks", 1)) != 1:
            raise ValueError(f"{global_pair} is not the global features alone fused with scaling {scaling!r}")
        scales, columns = [json.loads(global_attrs["block_scales"])[0]], []
        attrs = {"global_pair": os.path.relpath(global_pair, Path(out).parent), "global_width": gs.shape[1]}
    else:
        gs, gt, ys, yt = store_pair(global_source, global_target, source_manifest, target_manifest)
        scales = [block_scale(gs, scaling)]
        columns, attrs = [(apply_scale(gs, scaling, scales[0]), apply_scale(gt, scaling, scales[0]))], {}
    local_width = 0
    if local_pair is not None or local_stores is not None:
        if local_stores is not None:
            ls, lt, lys, lyt = store_pair(*local_stores, source_manifest, target_manifest)
        else:
            ls, lt, lys, lyt, _ = read_pair(local_pair)
        if not (np.array_equal(lys, ys) and np.array_equal(lyt, yt)):
            raise ValueError(f"{local_pair or local_stores[0]} rows do not match the global features "
                             f"{global_pair or global_source}")
        scales.append(block_scale(ls, scaling))
        columns.append((apply_scale(ls, scaling, scales[-1]), apply_scale(lt, scaling, scales[-1])))
        local_width = ls.shape[1]
    # the blocks side by side, as layerfuse.fusion.fuse concatenates them
    xs, xt = (np.concatenate([c[side] for c in columns], axis=1) for side in (0, 1))
    return xs, xt, ys, yt, {"scaling": scaling, "blocks": len(scales), "local_width": local_width,
                            "block_scales": json.dumps(scales), **attrs}

