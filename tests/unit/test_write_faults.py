"""A full disk or an unwritable folder: one error line naming the output, nothing left behind."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    limit = int(sys.argv[2])
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))   # writes past it fail with EFBIG
    from layerfuse._snakemake import run
    from layerfuse.h5io import write_pair
    rng = np.random.default_rng(0)             # random values: compressed, still 300 KB
    run(lambda: write_pair(sys.argv[1], rng.random((200, 300)), rng.random((50, 300)), np.zeros(200), np.zeros(50)))
""")


def _write(path, limit=0):
    return subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(limit)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("limit", [4_000, 100_000])
def test_disk_full_is_one_line_naming_the_file(tmp_path, limit):
    """The file-size limit hits while h5py writes data (or its metadata at close): same one line either way."""
    out = tmp_path / "pair.h5"
    proc = _write(out, limit)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: [Errno 27] cannot write {out}: File too large"]
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "results").write_text("a file where a folder should be")
    out = tmp_path / "results" / "x" / "pair.h5"
    proc = _write(out)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[0] == f"error: [Errno 20] cannot write {out}: Not a directory"
    assert "Traceback" not in proc.stderr


def test_a_complete_write_succeeds(tmp_path):
    out = tmp_path / "pair.h5"
    proc = _write(out)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["pair.h5"]


ROWS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import h5py
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from layerfuse._snakemake import run
    from layerfuse.h5io import FILE_ALIGNMENT, RowWriter, atomic_path, create_contiguous

    def write():
        with atomic_path(sys.argv[1]) as tmp, h5py.File(tmp, "w", **FILE_ALIGNMENT) as f:
            d = create_contiguous(f, "features", (64, 16, 32, 32), "float16")
            with RowWriter(tmp, d, 8) as w:
                for lo in range(0, 64, 8):
                    w.buffer[:] = lo
                    w.write(lo, 8)
    run(write)
""")


def test_disk_full_while_writing_rows_is_one_line_naming_the_file(tmp_path):
    """The uncompressed map stores' own writes fail as h5py's do: one error line, no file.

    The limit is not a whole number of pages, so the O_DIRECT write cut short at it is refused
    (EINVAL): the writer logs that it goes on buffered, and the buffered write meets the limit."""
    out = tmp_path / "maps.h5"
    proc = subprocess.run([sys.executable, "-c", ROWS_SCRIPT, str(out), "300000"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: [Errno 27] cannot write {out}: File too large"
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
