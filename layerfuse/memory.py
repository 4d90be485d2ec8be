"""Allocator setting for the stages that run the network (extraction, fine-tuning).

PyTorch's CPU tensors come from glibc ``malloc``, which serves every block
above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it
back with ``munmap`` when freed.  A ResNet-50 batch allocates and frees
several such blocks per layer (a batch of 32 ``layer1`` maps is 100 MB), so
every batch faults in, and the kernel zeroes, hundreds of MB of new pages:
a third of the CPU time where it was measured.  Serving those blocks from the
heap, where freed blocks are reused, removes that cost for extraction and for
training the fine-tuning tail (docs/benchmarks.md, "Measurements behind the
code's choices").
"""
from __future__ import annotations

import contextlib
import ctypes
import sys

__all__ = ["reuse_large_allocations"]

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024


def _glibc():
    """glibc's C library, or None (other platforms and C libraries: nothing to change)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  glibc only (musl has no such symbol)
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def reuse_large_allocations(enabled: bool = True):
    """Serve large blocks from the malloc heap, not fresh mmaps, inside the ``with`` block.

    Freed batch buffers are then reused by the next batch instead of being
    returned to the system and faulted in again.  The heap keeps what it
    grew to until the block ends (the peak is about the largest batch's
    working set plus fragmentation: +0.7 GB for the fine-tuning tail on
    Amazon); on exit mmap is allowed again and free heap memory is returned
    with ``malloc_trim``.  Process-wide while active; a no-op outside glibc.
    Yields whether the setting is active.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
