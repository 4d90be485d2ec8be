"""reuse_large_allocations: large blocks are reused inside the block, and given back after it.

Measured in a fresh interpreter (the heap a long test session leaves behind is not the one a
workflow job starts with), in page faults of torch tensors (numpy asks for transparent huge
pages, torch does not).
"""
import json
import subprocess
import sys

import pytest

from layerfuse.memory import _glibc, reuse_large_allocations

PROBE = r"""
import json, resource, torch
from layerfuse.memory import reuse_large_allocations

BLOCK = 64 * 2**20   # far above glibc's largest mmap threshold (32 MiB)

def faults_of_five_allocations():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        a = torch.ones(BLOCK // 4)   # allocate and touch every page, then free (as a network's batch)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

default = faults_of_five_allocations()
before = rss()
with reuse_large_allocations() as active:
    faults_of_five_allocations()   # the heap grows once
    inside = faults_of_five_allocations()
    held = [torch.ones(BLOCK // 4) for _ in range(4)]   # grow the heap by 256 MB
    del held
print(json.dumps({"active": active, "default": default, "inside": inside, "grown_after": rss() - before,
                  "pages": BLOCK // resource.getpagesize(), "block": BLOCK}))
"""


@pytest.mark.slow                      # gigabyte blocks (3 s): the full suite
@pytest.mark.skipif(_glibc() is None, reason="glibc malloc only")
def test_large_blocks_are_reused_inside_and_returned_after():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["active"]
    assert r["default"] > 2 * r["pages"], f"{r}: the default allocator did not fault fresh pages"
    # typically 0 faults; at most one of the five blocks has been seen to land on fresh pages
    assert r["inside"] < r["default"] / 3, f"{r}: freed blocks were not reused inside the block"
    assert r["grown_after"] < r["block"], f"{r}: the heap kept its memory after the block"


def test_disabled_is_a_no_op():
    with reuse_large_allocations(enabled=False) as active:
        assert not active
