"""reuse_large_allocations: large blocks are reused inside the block, and given back after it.

Counted in page faults of torch tensors (numpy asks for transparent huge pages, torch does not).
"""
import resource

import pytest
import torch

from layerfuse.memory import _glibc, reuse_large_allocations

BLOCK = 64 * 2**20   # far above glibc's largest mmap threshold (32 MiB)


def _page_faults_of_five_allocations() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        a = torch.ones(BLOCK // 4)   # allocate and touch every page, then free (as a network's batch)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.mark.skipif(_glibc() is None, reason="glibc malloc only")
def test_large_blocks_are_reused_inside_and_returned_after():
    pages = BLOCK // resource.getpagesize()
    before = _rss_bytes()
    with reuse_large_allocations() as active:
        assert active
        _page_faults_of_five_allocations()      # the heap grows once
        inside = _page_faults_of_five_allocations()
        held = [torch.ones(BLOCK // 4) for _ in range(4)]   # grow the heap by 256 MB
        del held
    assert inside < pages // 2, f"{inside} page faults for 5 blocks of {pages} pages: freed blocks not reused"
    assert _rss_bytes() < before + BLOCK, "the heap kept its memory after the block"


def test_disabled_is_a_no_op():
    with reuse_large_allocations(enabled=False) as active:
        assert not active
