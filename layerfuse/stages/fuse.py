"""Stages of rules/fuse.smk: global features with a reduced local block."""
from __future__ import annotations


from ..fusion import fuse_stores
from ..h5io import write_pair



def fuse_features(global_source, global_target, local_pair, scaling: str, out, source_manifest=None,
                  target_manifest=None, local_stores=None, global_pair=None) -> None:
    """Global features alone or concatenated with a reduced local block: a pair file of the
    experiment (``local_pair``), or ``local_stores``, the (source, target) stores of per-image vectors
    (one pooled store twice, or the extraction pass's stores where maps are not stored).

    ``global_pair``: the fused pair of the global features alone (this function's output without a
    local block).  Given with a local block, the global vectors are read from it (``global_source`` and
    ``global_target`` are not needed) and ``out`` holds the scaled block's columns only, with
    ``global_pair`` in its attributes: :func:`layerfuse.h5io.read_pair` puts the global columns first.

    ``source_manifest``/``target_manifest`` select the rows of every store (see :func:`manifest_rows`).
    """
    xs, xt, ys, yt, attrs = fuse_stores(global_source, global_target, local_pair, scaling, out, source_manifest,
                                        target_manifest, local_stores, global_pair)
    write_pair(out, xs, xt, ys, yt, attrs)
