"""layerfuse.job_memory: the downstream rules' mem_mb from their stores' shapes, against the peak RSS of
the stage run in a fresh interpreter on real HDF5 pairs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerfuse import job_memory
from layerfuse.h5io import pair_shape, write_pair

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc for peak RSS")
TCA = {"n_components": 64, "kernel": "rbf", "gamma": "median", "bandwidth_factor": 3.0, "mu": 1.0, "solver": "auto",
       "n_landmarks": 500, "auto_threshold": 3000}


def _pair(path, ns, nt, d, seed=0, extends=None):
    """Ten well-separated Gaussian classes."""
    rng = np.random.default_rng(seed)
    ys, yt = rng.integers(0, 10, ns), rng.integers(0, 10, nt)      # first: a block extending a pair shares its rows
    means = rng.normal(0, 4 / np.sqrt(2), (10, d)).astype(np.float32) / np.sqrt(d) * np.sqrt(2)
    attrs = {"layer": "x", "reducer": "", "scaling": "block-rms", **({"global_pair": extends} if extends else {})}
    write_pair(path, means[ys] + rng.standard_normal((ns, d), dtype=np.float32) / np.sqrt(d),
               means[yt] + rng.standard_normal((nt, d), dtype=np.float32) / np.sqrt(d), ys, yt, attrs)
    return path


def _peak_mb(code: str) -> float:
    """Peak RSS of ``code`` run in a fresh interpreter (what a Snakemake job's benchmark reports): the
    process's VmHWM (``ru_maxrss`` would carry over the forking test process's size through exec)."""
    script = code + ("\nprint(next(int(line.split()[1]) for line in open('/proc/self/status')"
                     " if line.startswith('VmHWM')) / 1024)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_pair_shape_counts_the_global_columns_a_block_extends(tmp_path):
    _pair(tmp_path / "global.h5", 30, 20, 8)
    _pair(tmp_path / "block.h5", 30, 20, 5, extends="global.h5")
    assert pair_shape(tmp_path / "block.h5") == (30, 20, 13)


def _fused(tmp_path, ns, nt, d, layout):
    """A fused pair of ``d`` columns: whole (the global feature set's), or a block's ``d // 3`` columns
    extending a global pair of the rest (a local feature set's, read together by ``read_pair``)."""
    if layout == "whole":
        return _pair(tmp_path / "fused.h5", ns, nt, d)
    _pair(tmp_path / "global.h5", ns, nt, d - d // 3)
    return _pair(tmp_path / "block.h5", ns, nt, d // 3, extends="global.h5")


@needs_proc
@pytest.mark.slow                                  # child processes measured: the full suite's
@pytest.mark.parametrize("solver, layout", [("liblinear", "whole"), ("newton", "whole"), ("newton", "extends")])
def test_evaluate_svm_estimate_covers_the_measured_peak(tmp_path, monkeypatch, solver, layout):
    monkeypatch.setattr(job_memory, "MIN_MB", 0)         # the estimate itself, not the 1 GB floor
    fused = _fused(tmp_path, 4000, 2500, 1000, layout)
    tca = _pair(tmp_path / "tca.h5", 4000, 2500, 64, seed=1)
    svm = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000, "solver": solver}
    peak = _peak_mb(f"from layerfuse.stages import evaluate_svm\n"
                    f"evaluate_svm({{'none': {str(fused)!r}, 'tca': {str(tca)!r}}}, ['none', 'tca-64'], {json.dumps(svm)},"
                    f" {{'experiment': 'e', 'backbone': 'b', 'featureset': 'global'}}, {str(tmp_path / 's.csv')!r})")
    estimate = job_memory.evaluate_svm_mb(fused, {"tca": tca}, solver=solver)
    assert peak <= estimate <= 2 * peak, (peak, estimate)


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["whole", "extends"])
def test_fit_tca_estimate_covers_the_measured_peak(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(job_memory, "MIN_MB", 0)
    fused = _fused(tmp_path, 6000, 4000, 1500, layout)
    spec = {"method": "tca", **TCA}
    peak = _peak_mb(f"from layerfuse.stages import fit_adapter\n"
                    f"fit_adapter({str(fused)!r}, {json.dumps(spec)}, {str(tmp_path / 'tca.h5')!r})")
    estimate = job_memory.fit_adapter_mb(fused, spec)
    assert peak <= estimate <= 2 * peak, (peak, estimate)


def test_small_jobs_ask_the_floor(tmp_path):
    fused = _pair(tmp_path / "fused.h5", 60, 40, 16)
    assert job_memory.fit_tca_mb(fused) == job_memory.evaluate_svm_mb(fused, {}) == job_memory.MIN_MB


def test_a_store_not_made_yet_is_named_for_snakemake_to_ask_again(tmp_path):
    """Snakemake treats a FileNotFoundError naming one of the job's inputs as "evaluate once they exist"."""
    missing = str(tmp_path / "fused.h5")
    with pytest.raises(FileNotFoundError) as err:
        job_memory.fit_tca_mb(missing)
    assert err.value.filename == missing


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_fit_pca_estimate_covers_the_measured_peak(tmp_path, monkeypatch, threads):
    """fit_pca on a sample store of block maps as the pass writes them (float16, images x channels x h x w),
    on one thread and on two (two blocks of columns held at once)."""
    import h5py

    monkeypatch.setattr(job_memory, "MIN_MB", 0)
    rng = np.random.default_rng(0)
    sample = tmp_path / "sample.h5"
    with h5py.File(sample, "w") as f:
        f["features"] = rng.standard_normal((1200, 64, 28, 28), dtype=np.float32).astype(np.float16)
        f["labels"] = rng.integers(0, 10, 1200)
    reducer = {"method": "pca", "n_components": 256, "block_memory_mb": 128}
    peak = _peak_mb(f"from layerfuse.stages import fit_pca\n"
                    f"fit_pca({str(sample)!r}, {str(sample)!r}, {json.dumps(reducer)}, {str(tmp_path / 'pca.h5')!r}, "
                    f"threads={threads})")
    estimate = job_memory.fit_pca_mb(sample, n_components=256, block_memory_mb=128, threads=threads)
    assert peak <= estimate <= 2 * peak, (peak, estimate)


def test_fit_pca_takes_the_cores_whose_column_blocks_fit_the_budget():
    """Each thread holds a column block and its n x n product: --cores 16 at the defaults gets the threads
    whose blocks fit the fixed job budget, a 2-core machine both cores, and a block larger than the budget
    still one thread."""
    per_thread_mb = 1024 + 4 * 5000 ** 2 / 2 ** 20
    capped = job_memory.fit_pca_threads(16, n_sample=5000)
    assert capped == int(job_memory.PASS_BUDGET_MB // per_thread_mb) < 16
    assert capped * job_memory.fit_pca_threads(1, n_sample=5000) * per_thread_mb <= job_memory.PASS_BUDGET_MB
    assert job_memory.fit_pca_threads(2, n_sample=5000) == 2
    assert job_memory.fit_pca_threads(16, n_sample=300, block_memory_mb=64) == 16
    assert job_memory.fit_pca_threads(16, n_sample=5000, block_memory_mb=10 * job_memory.PASS_BUDGET_MB) == 1
