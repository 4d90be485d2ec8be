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


@pytest.mark.parametrize("method,params", [("pca", {"n_components": 8, "block_memory_mb": 0.001}),
                                           ("flatten", {"segment": 7}), ("pool2d", {})])
def test_rows_of_one_store_equal_separate_stores(tmp_path, rng, method, params):
    """A seeded split read as rows of one (pooled) store reduces exactly as two separate stores."""
    from layerfuse.h5io import create_store

    x = rng.rand(40, 32, 5, 5).astype(np.float32)
    with h5py.File(tmp_path / "pool.h5", "w") as f:
        create_store(f, "features", x.shape, "float32", compression="zstd")[...] = x
    order = rng.permutation(40)
    rows_s, rows_t = order[:29], np.sort(order[29:])[::-1]          # disjoint, out of store order
    _store(tmp_path / "s.h5", x[rows_s])
    _store(tmp_path / "t.h5", x[rows_t])
    pooled = reduce_store_pair(tmp_path / "pool.h5", tmp_path / "pool.h5", method, params, rows_s, rows_t)
    separate = reduce_store_pair(tmp_path / "s.h5", tmp_path / "t.h5", method, params)
    for d in ("source", "target"):
        assert pooled[d].shape == separate[d].shape
        # PCA: float32 Gram blocks are cut differently (summation order); per-image reducers are exact
        np.testing.assert_allclose(pooled[d], separate[d], rtol=1e-5, atol=1e-3 if method == "pca" else 0)


def test_reduce_pool_layer_keeps_ids_and_refuses_pca(tmp_path, rng):
    """A pool's per-image reduction is a store (ids kept, so seeds can pick rows); PCA is per seed."""
    from layerfuse.h5io import read_arrays, write_meta
    from layerfuse.stages import reduce_pool_layer

    x = rng.rand(6, 3, 4, 4).astype(np.float32)
    with h5py.File(tmp_path / "pool.h5", "w") as f:
        f["features"] = x
        write_meta(f, [0, 0, 1, 1, 2, 2], [f"c/{i}.png" for i in range(6)])
    reduce_pool_layer(tmp_path / "pool.h5", {"method": "pool2d"}, tmp_path / "out.h5")
    out, _ = read_arrays(tmp_path / "out.h5")
    np.testing.assert_array_equal(out["features"], pool2d(x))
    assert out["image_ids"].tolist() == [f"c/{i}.png" for i in range(6)]
    with pytest.raises(ValueError, match="PCA is fitted on each experiment's source rows"):
        reduce_pool_layer(tmp_path / "pool.h5", {"method": "pca", "n_components": 2}, tmp_path / "pca.h5")
    assert not (tmp_path / "pca.h5").exists()


@pytest.mark.parametrize("block_mb", [0.001, 1024])
def test_pca_is_bit_identical_on_chunked_and_contiguous_stores(tmp_path, rng, block_mb):
    """The streamed PCA reads the same 16-channel column blocks from an lz4 store as from an uncompressed
    contiguous one, so the store's compression changes no bit of the scores."""
    from layerfuse.h5io import FILE_ALIGNMENT, create_contiguous, create_store

    x = (rng.rand(30, 40, 6, 6) * (rng.rand(30, 40, 6, 6) > 0.5)).astype(np.float16)   # sparse, like ReLU maps
    for name in ("s", "t"):
        rows = x[:24] if name == "s" else x[24:]
        with h5py.File(tmp_path / f"{name}_lz4.h5", "w") as f:
            create_store(f, "features", rows.shape, rows.dtype, compression="lz4")[...] = rows
        with h5py.File(tmp_path / f"{name}_raw.h5", "w", **FILE_ALIGNMENT) as f:
            create_contiguous(f, "features", rows.shape, rows.dtype)[...] = rows
    params = {"n_components": 10, "block_memory_mb": block_mb}
    packed = reduce_store_pair(tmp_path / "s_lz4.h5", tmp_path / "t_lz4.h5", "pca", params)
    raw = reduce_store_pair(tmp_path / "s_raw.h5", tmp_path / "t_raw.h5", "pca", params)
    assert packed["target"].shape == (6, 10) and np.abs(packed["target"]).sum() > 0
    for d in ("source", "target"):
        np.testing.assert_array_equal(packed[d], raw[d])


def test_pca_fit_is_the_same_bits_whatever_its_threads(tmp_path, rng):
    """fit_pca multiplies blocks of columns side by side, one thread each, and sums their Gram matrices in
    the blocks' order: the model is the same bits on one thread or three (so a run's results do not depend
    on --cores), and it is the PCA scikit-learn fits."""
    from layerfuse.reduce import GramPCA, fit_pca_sample

    x = (rng.rand(40, 48, 5, 5) * (rng.rand(40, 48, 5, 5) > 0.5)).astype(np.float16)
    with h5py.File(tmp_path / "sample.h5", "w") as f:
        f["features"] = x
    # 0.01 MB: blocks of 16 channels (the store's alignment), 3 of them
    fits = [fit_pca_sample(tmp_path / "sample.h5", 8, block_memory_mb=0.01, n_jobs=j) for j in (1, 2, 3)]
    for fit in fits[1:]:
        for key in ("mean", "loadings", "explained_variance"):
            np.testing.assert_array_equal(fit[key], fits[0][key])
    flat = x.reshape(40, -1).astype(np.float64)
    ref = PCA(8, svd_solver="full").fit(flat)
    np.testing.assert_allclose(fits[0]["explained_variance"], ref.explained_variance_, rtol=1e-4)
    scores = (flat - fits[0]["mean"]) @ fits[0]["loadings"]
    np.testing.assert_allclose(np.abs(scores), np.abs(ref.transform(flat)), rtol=1e-3, atol=1e-3)
    # the target's cross products too (the stored maps' reduce_layer)
    with h5py.File(tmp_path / "sample.h5", "r") as f:
        pair = [GramPCA(8, block_memory_mb=0.01, n_jobs=j).fit_transform_stores(f["features"], f["features"],
                                                                                np.arange(30), np.arange(30, 40))
                for j in (1, 3)]
    np.testing.assert_array_equal(pair[0].target, pair[1].target)
    np.testing.assert_array_equal(pair[0].source, pair[1].source)


def test_pca_sample_rows_are_a_seeded_stratified_sample():
    """Every row where the source is no larger than the sample; else sorted rows keeping each class's share,
    the same for the same seed."""
    from layerfuse.reduce import pca_sample_rows

    labels = np.repeat([0, 1, 2], [60, 30, 10])
    assert np.array_equal(pca_sample_rows(labels, 100), np.arange(100))
    rows = pca_sample_rows(labels, 50, seed=3)
    assert len(rows) == 50 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [30, 15, 5]
    assert np.array_equal(rows, pca_sample_rows(labels, 50, seed=3))
    assert not np.array_equal(rows, pca_sample_rows(labels, 50, seed=4))


def test_reducer_entries_are_checked_and_applied_through_one_protocol(rng):
    """A key another method takes is refused naming the entry; a per-image reducer and PCA's projection are
    applied to a batch of maps by the same call (what the extraction pass and a saved model use)."""
    from layerfuse.reduce import REDUCERS, apply_reducer, check_reducer, is_fitted, project_maps, reduce_maps

    with pytest.raises(ValueError, match=r"^reducers.p: 'segment' applies to flatten, not pca$"):
        check_reducer("p", {"method": "pca", "segment": 3})
    check_reducer("f", {"method": "flatten", "segment": 3})
    assert [m for m in REDUCERS if is_fitted({"method": m})] == ["pca"]
    maps = rng.rand(3, 4, 6, 6).astype(np.float32)
    np.testing.assert_array_equal(apply_reducer(maps, {"method": "flatten", "segment": 7}), flatten_pool(maps, 7))
    np.testing.assert_array_equal(apply_reducer(maps, {"method": "pool2d"}), reduce_maps(maps, "pool2d", {}))
    mean, loadings = rng.rand(144).astype(np.float32), rng.rand(144, 5).astype(np.float32)
    np.testing.assert_array_equal(apply_reducer(maps, {"method": "pca"}, {"mean": mean, "loadings": loadings}),
                                  project_maps(maps, mean, loadings))
    with pytest.raises(ValueError, match="per-image reducer"):
        reduce_maps(maps, "pca", {})


def test_projection_is_the_same_bits_whatever_the_batch():
    """A pass projects its batch in products of PROJECTION_ROWS rows: a 32-image batch (the main pass) gives the
    same bits as its two 16-image halves (a pass of its own), so the stores do not depend on extract.pca_in_pass."""
    from layerfuse.reduce import PROJECTION_ROWS, project_maps

    rng = np.random.default_rng(0)
    maps = rng.standard_normal((2 * PROJECTION_ROWS + 3, 8, 12, 12)).astype(np.float16)
    mean = rng.standard_normal(8 * 144).astype(np.float32)
    loadings = rng.standard_normal((8 * 144, 40)).astype(np.float32)
    whole = project_maps(maps, mean, loadings)
    halves = np.concatenate([project_maps(maps[i:i + PROJECTION_ROWS], mean, loadings)
                             for i in range(0, len(maps), PROJECTION_ROWS)])
    assert whole.dtype == np.float32 and whole.tobytes() == halves.tobytes()
    expected = (maps.reshape(len(maps), -1).astype(np.float32) - mean) @ loadings
    np.testing.assert_allclose(whole, expected, rtol=1e-4, atol=1e-3)
