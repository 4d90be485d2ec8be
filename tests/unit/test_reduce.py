"""Local reducers: flatten pooling, pooling 2D and the streamed Gram PCA."""
import h5py
import numpy as np
import pytest
from sklearn.decomposition import PCA

from layerfuse.reduce import flatten_pool, pool2d, reduce_store_pair


def test_flatten_pool_paper_size(rng):
    """256 x 55 x 55 maps with x=100 give 7,744 segment means (the paper)."""
    maps = rng.rand(2, 256, 55, 55).astype(np.float32)
    out = flatten_pool(maps, 100)
    assert out.shape == (2, 7744)
    np.testing.assert_allclose(out[1, 5], maps[1].ravel()[500:600].mean(), rtol=1e-5)


def test_flatten_pool_remainder(rng):
    """56 x 56 maps leave a partial last segment, averaged over what it has."""
    maps = rng.rand(1, 256, 56, 56)
    out = flatten_pool(maps, 100)
    assert out.shape == (1, 8029)
    np.testing.assert_allclose(out[0, -1], maps.ravel()[802800:].mean(), rtol=1e-5)


@pytest.mark.parametrize("region,expected", [(None, 256), (55, 256), (11, 256 * 25), (20, 256 * 4)])
def test_pool2d_shapes(rng, region, expected):
    maps = rng.rand(2, 256, 55, 55)
    out = pool2d(maps, region)
    assert out.shape == (2, expected)
    if region in (None, 55):
        np.testing.assert_allclose(out, maps.mean(axis=(2, 3)), rtol=1e-5)


def test_pool2d_bad_region(rng):
    with pytest.raises(ValueError, match="region"):
        pool2d(rng.rand(1, 2, 5, 5), 6)


def _store(path, x):
    with h5py.File(path, "w") as f:
        f["features"] = x
        f["labels"] = np.zeros(len(x), np.int64)


@pytest.mark.parametrize("block_mb", [0.001, 1024])
def test_gram_pca_matches_sklearn(tmp_path, rng, block_mb):
    """Source and target scores equal scikit-learn's PCA (up to sign), however blocks are cut."""
    xs = rng.randn(30, 4, 5, 5).astype(np.float32)
    xt = (rng.randn(12, 4, 5, 5) + 0.5).astype(np.float32)
    _store(tmp_path / "s.h5", xs)
    _store(tmp_path / "t.h5", xt)
    out = reduce_store_pair(tmp_path / "s.h5", tmp_path / "t.h5", "pca",
                            {"n_components": 10, "block_memory_mb": block_mb})
    ref = PCA(10, svd_solver="full").fit(xs.reshape(30, -1))
    for ours, theirs in ((out["source"], ref.transform(xs.reshape(30, -1))),
                         (out["target"], ref.transform(xt.reshape(12, -1)))):
        signs = np.sign((ours * theirs).sum(0))
        np.testing.assert_allclose(ours * signs, theirs, atol=1e-3)


def test_gram_pca_caps_components(tmp_path, rng):
    """More components than source images minus one are capped, not an error."""
    _store(tmp_path / "s.h5", rng.randn(6, 50).astype(np.float32))
    _store(tmp_path / "t.h5", rng.randn(3, 50).astype(np.float32))
    out = reduce_store_pair(tmp_path / "s.h5", tmp_path / "t.h5", "pca", {"n_components": 256})
    assert out["source"].shape == (6, 5) and out["target"].shape == (3, 5)
