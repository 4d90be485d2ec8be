"""Extraction options that must not change the features: overlapped writes, torch.compile, precision."""
import logging
import os
import shutil

import h5py
import numpy as np
import pytest

from layerfuse.backbones import BackboneSpec, build_resnet50, native_bf16, resolve_precision
from layerfuse.extract import extract_features, feature_store_attrs, gather_features
from layerfuse.h5io import create_store, write_meta

LAYERS = {"global": "flatten", "block1": "layer1.0"}


@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    """Seven 64x64 photos-like images (the last batch of 4 is partial)."""
    path = tmp_path_factory.mktemp("images") / "images.h5"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        create_store(f, "images", images.shape, "uint8")[...] = images
        write_meta(f, list(range(7)), [f"img{i}" for i in range(7)], {"image_list_sha256": "x"})
    return path


@pytest.fixture(scope="module")
def model():
    import torch

    torch.manual_seed(0)
    return build_resnet50(BackboneSpec())


def _extract(store, out_dir, model, layers=LAYERS, **kw):
    outputs = {k: out_dir / f"{k}.h5" for k in layers}
    kw.setdefault("precision", "fp32")
    facts = extract_features(store, outputs, layers=layers, model=model, spec=BackboneSpec(), batch_size=4,
                             threads=2, **kw)
    arrays = {}
    for k, p in outputs.items():
        with h5py.File(p, "r") as f:
            arrays[k] = f["features"][()]
            arrays[k + ".attrs"] = dict(f.attrs)
    return facts, arrays


def test_overlapped_writes_give_identical_stores(tmp_path, image_store, model):
    """Writing batch i in a thread while batch i+1 computes changes no bit."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, seq = _extract(image_store, tmp_path / "a", model, overlap_writes=False, compile_model=False)
    _, ovl = _extract(image_store, tmp_path / "b", model, overlap_writes=True, compile_model=False)
    for k in LAYERS:
        assert seq[k].shape[0] == 7 and np.array_equal(seq[k], ovl[k])
    assert seq["global.attrs"]["compiled"] == np.False_


@pytest.mark.slow                      # a cold torch.compile (5 s): the full suite
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile needs a C++ compiler")
def test_compiled_extraction_matches_eager(tmp_path, image_store, model):
    """torch.compile (frozen weights, padded static last batch) gives the eager features to 1e-4."""
    layers = {"block1": "layer1.0"}  # the stem and one block: compiles in seconds
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, eager = _extract(image_store, tmp_path / "a", model, layers, compile_model=False, local_dtype="float32")
    facts, fast = _extract(image_store, tmp_path / "b", model, layers, compile_model=True, local_dtype="float32")
    assert facts["compiled"] and fast["block1.attrs"]["compiled"] == np.True_
    assert fast["block1"].shape == eager["block1"].shape
    np.testing.assert_allclose(fast["block1"], eager["block1"], rtol=1e-4, atol=1e-4 * np.abs(eager["block1"]).max())


def test_compile_failure_falls_back_to_eager(tmp_path, image_store, model, monkeypatch, caplog):
    """Where torch.compile cannot work (no compiler), extraction warns and runs eagerly."""
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="layerfuse.extract"):
        facts, arrays = _extract(image_store, tmp_path, model, {"block1": "layer1.0"}, compile_model=True)
    assert not facts["compiled"] and arrays["block1"].shape[0] == 7
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in caplog.text


def test_precision_auto_follows_the_hardware(tmp_path, image_store, model):
    """auto is bf16 only where the CPU computes bf16 natively; the store records what ran."""
    facts, arrays = _extract(image_store, tmp_path, model, {"block1": "layer1.0"}, precision="auto",
                             compile_model=False)
    assert facts["precision"] == arrays["block1.attrs"]["precision"] == resolve_precision("auto")
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    assert native_bf16("cpu") == ("amx_bf16" in flags or "avx512_bf16" in flags)
    assert resolve_precision("auto") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp16")


def test_device_auto_follows_torch_and_a_missing_gpu_is_one_line(tmp_path, image_store, model, monkeypatch):
    """extract.device: auto is the GPU where torch sees one, cpu is honoured, and cuda without a GPU fails before
    any store is opened, naming the key; the store records the device that ran."""
    import torch

    from layerfuse.backbones import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="extract.device must be one of auto, cpu, cuda"):
        resolve_device("gpu")
    _, arrays = _extract(image_store, tmp_path / "cpu", model, {"global": "flatten"}, device="cpu",
                         compile_model=False)
    assert arrays["global.attrs"]["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    (tmp_path / "cuda").mkdir()
    with pytest.raises(ValueError, match=r"^extract.device is cuda, but torch sees no CUDA device"):
        _extract(image_store, tmp_path / "cuda", model, {"global": "flatten"}, device="cuda")
    assert not any((tmp_path / "cuda").glob("*.h5*"))


def test_compile_auto_only_where_it_pays(tmp_path, image_store, model):
    """auto compiles deep passes over many images; a shallow or small pass stays eager."""
    from layerfuse.extract import _deep

    assert _deep(["flatten"]) and _deep(["layer1.0", "layer3.2"])
    assert not _deep(["layer1.0", "layer1.2", "maxpool"])
    facts, _ = _extract(image_store, tmp_path, model, {"global": "flatten"}, compile_model="auto")
    assert facts["compiled"] is False  # 7 images: a cold compile would cost more than it saves


# one codec in make test-fast, every codec in the full suite
@pytest.mark.parametrize("compression",
                         ["zstd", *(pytest.param(c, marks=pytest.mark.slow) for c in ("lz4", "lzf", "gzip"))])
def test_compression_is_lossless(tmp_path, image_store, model, compression):
    """Every store compression gives the uncompressed store's bits, in fewer bytes for zstd and lz4."""
    layers = {"block1": "layer1.0"}
    (tmp_path / "raw").mkdir()
    (tmp_path / "packed").mkdir()
    _, raw = _extract(image_store, tmp_path / "raw", model, layers, compression=None, compile_model=False)
    _, packed = _extract(image_store, tmp_path / "packed", model, layers, compression=compression,
                         compile_model=False)
    assert raw["block1"].dtype == np.float16 and np.array_equal(raw["block1"], packed["block1"])
    if compression in ("zstd", "lz4"):
        assert (tmp_path / "packed" / "block1.h5").stat().st_size < (tmp_path / "raw" / "block1.h5").stat().st_size


def test_vector_stores_are_compressed_chunks_of_a_batch(tmp_path, image_store, model):
    """Vectors (global features) are stored in chunks of one batch's rows through Blosc zstd (each chunk
    written once), in fewer bytes than the same float32 values stored plainly."""
    from layerfuse.h5io import vector_compression

    _, arrays = _extract(image_store, tmp_path, model, {"global": "flatten"}, compile_model=False)
    with h5py.File(tmp_path / "global.h5") as f:
        d = f["features"]
        assert d.dtype == np.float32 and d.chunks == (4, 2048)
        assert str(vector_compression()["compression"]) in {str(k) for k in d._filters}
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("features", data=arrays["global"])
    assert (tmp_path / "global.h5").stat().st_size < plain.stat().st_size


def test_unknown_compression_is_refused():
    from layerfuse.h5io import compression_options

    with pytest.raises(ValueError, match="compression must be zstd, lz4, lzf, gzip or none"):
        compression_options("brotli")


def test_folded_batchnorm_matches_the_network():
    """BatchNorm folded into the convs computes the same features; a requested conv stays unfolded."""
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    from layerfuse.backbones import fold_batchnorm

    torch.manual_seed(1)
    net = build_resnet50(BackboneSpec())
    for m in net.modules():  # non-trivial statistics, as trained weights have
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    nodes = {"layer1.0": "block1", "layer3.2.bn2": "mid", "flatten": "global", "layer1.1.conv2": "conv"}
    folded = fold_batchnorm(net, keep=set(nodes))
    names = dict(folded.named_modules())
    assert isinstance(names["layer1.0.bn1"], torch.nn.Identity) and isinstance(names["bn1"], torch.nn.Identity)
    assert isinstance(names["layer1.1.bn2"], torch.nn.BatchNorm2d)  # its conv is a requested node
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the input is not modified
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = create_feature_extractor(net, nodes)(x)
        got = create_feature_extractor(folded, nodes)(x)
    for key in nodes.values():
        err = float((got[key] - ref[key]).norm() / ref[key].norm())
        assert err < 1e-5, (key, err)


@pytest.mark.parametrize("batch_size", [4, pytest.param(3, marks=pytest.mark.slow)])   # 3: the full suite
def test_direct_rows_match_buffered_and_chunked(tmp_path, image_store, model, batch_size):
    """Uncompressed maps written past the page cache hold the same bits as buffered and lz4 stores.

    15x15 maps are 115,200 bytes a row: batches of 4 start every 450 KiB, some on a 4-KiB page and
    some not; batches of 3 start off a page after the first, so both write paths are taken."""
    from layerfuse.h5io import DIRECT_ALIGN

    layers = {"block1": "layer1.0"}
    stores = {}
    for name, kw in {"direct": dict(compression="none", direct_io=True),
                     "buffered": dict(compression="none", direct_io=False),
                     "lz4": dict(compression="lz4")}.items():
        (tmp_path / name).mkdir()
        outputs = {"block1": tmp_path / name / "block1.h5"}
        extract_features(image_store, outputs, layers=layers, model=model, spec=BackboneSpec(),
                         batch_size=batch_size, threads=2, precision="fp32", compile_model=False, **kw)
        with h5py.File(outputs["block1"], "r") as f:
            d = f["features"]
            stores[name] = (d[()], d.chunks, d.id.get_offset(), dict(f.attrs))
    direct, buffered, lz4 = stores["direct"], stores["buffered"], stores["lz4"]
    assert direct[0].shape == (7, 256, 15, 15) and direct[0].dtype == np.float16 and np.count_nonzero(direct[0])
    assert np.array_equal(direct[0], buffered[0]) and np.array_equal(direct[0], lz4[0])
    assert direct[1] is None and direct[2] % DIRECT_ALIGN == 0 and lz4[1] == (7, 16, 15, 15)
    assert buffered[3]["direct_io"] == np.False_ and "direct_io" not in lz4[3]
    assert direct[3]["direct_io"] in (np.True_, np.False_)   # False only where the file system refuses O_DIRECT


def test_row_writer_refuses_rows_outside_the_dataset(tmp_path):
    """A block past the last row is an error naming the file, not a write into HDF5's own bytes."""
    from layerfuse.h5io import FILE_ALIGNMENT, RowWriter, create_contiguous

    path = tmp_path / "rows.h5"
    with h5py.File(path, "w", **FILE_ALIGNMENT) as f:
        d = create_contiguous(f, "features", (5, 3, 4, 4), "float16")
        with RowWriter(path, d, max_rows=4) as w:
            w.buffer[:] = np.arange(w.buffer.size, dtype=np.float16).reshape(w.buffer.shape)
            w.write(0, 4)
            w.buffer[:1] = -1
            w.write(4, 1)
            with pytest.raises(IndexError, match="rows.h5: rows 4..6 outside 0..5"):
                w.write(4, 2)
    with h5py.File(path, "r") as f:
        back = f["features"][()]
    assert np.array_equal(back[:4].ravel(), np.arange(4 * 48, dtype=np.float16)) and (back[4] == -1).all()


def test_list_layers_names_the_configured_nodes_with_their_shapes():
    """Meta tensors only: every block with its output shape, the paper's 55 x 55 maps without maxpool padding."""
    from layerfuse.backbones import BackboneSpec, list_layers

    shapes = dict(list_layers(BackboneSpec("keras", "caffe", False)))
    assert shapes["layer1.0"] == shapes["layer1.2"] == (256, 55, 55) and shapes["flatten"] == (2048,)
    assert shapes["layer4.2"] == (2048, 7, 7) and shapes["fc"] == (1000,)
    assert dict(list_layers(BackboneSpec("torchvision", "torch", True)))["layer1.0"] == (256, 56, 56)


@pytest.mark.parametrize("compression", ["none", pytest.param("lz4", marks=pytest.mark.slow)])   # lz4: the full suite
def test_gathered_shards_are_the_unsharded_stores_byte_for_byte(tmp_path, image_store, model, compression):
    """Shards of 4 of the 7 images (the last one past the end: empty), gathered in order, give the files of
    one pass over all 7, byte for byte, maps and vectors; shards run on different devices are refused."""
    def run(name, **kw):
        outputs = {k: tmp_path / name / f"{k}.h5" for k in LAYERS}
        (tmp_path / name).mkdir()
        extract_features(image_store, outputs, layers=LAYERS, model=model, spec=BackboneSpec(), batch_size=4,
                         threads=2, precision="fp32", compile_model=False, compression=compression, **kw)
        return outputs

    whole = run("whole")
    shards = [run(f"shard{i}", rows=(4 * i, 4 * i + 4)) for i in range(3)]
    assert [h5py.File(s["global"])["features"].shape[0] for s in shards] == [4, 3, 0]
    gathered = {k: tmp_path / f"gathered-{k}.h5" for k in LAYERS}
    attrs = {k: feature_store_attrs(k, node, BackboneSpec(), "", "", "x", 64, batchnorm_folded=True)
             for k, node in LAYERS.items()}
    gather_features(image_store, shards, gathered, attrs=attrs, batch_size=4, compression=compression)
    for k in LAYERS:
        assert gathered[k].read_bytes() == whole[k].read_bytes(), k
    with pytest.raises(ValueError, match=r"the shards hold 4 rows, the image store 7"):
        gather_features(image_store, shards[:1], {k: tmp_path / f"short-{k}.h5" for k in LAYERS}, attrs=attrs,
                        batch_size=4, compression=compression)
    assert not any(tmp_path.glob("short-*"))
    with pytest.raises(ValueError, match=r"a shard starts on a batch"):
        run("misaligned", rows=(2, 6))
    with h5py.File(shards[1]["global"], "r+") as f:               # a shard run on a GPU node
        assert f.attrs["device"] == "cpu"
        f.attrs["device"] = "cuda"
    with pytest.raises(ValueError, match=r"different precisions, compilation or devices .*'cuda'"):
        gather_features(image_store, shards, {k: tmp_path / f"mixed-{k}.h5" for k in LAYERS}, attrs=attrs,
                        batch_size=4, compression=compression)
    assert not any(tmp_path.glob("mixed-*"))


def test_too_little_disk_is_one_line_before_any_store(tmp_path, image_store, model, monkeypatch):
    """Free space below the stores' size: an OSError naming the folder and the estimate, no file written."""
    import layerfuse.extract as extract

    real = shutil.disk_usage
    _, first = _extract(image_store, tmp_path / "first", model, compile_model=False)
    need = first["global"].nbytes + first["block1"].nbytes          # float32 vectors, float16 maps
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda p: real(p)._replace(free=need - 1))
    out = tmp_path / "stores"
    with pytest.raises(OSError, match=r"stores: too little disk for the stores of global, block1: about 0\.0 GB "
                                      r"\(0\.\d+ MB per image x 7 images\), 0\.0 GB free") as err:
        _extract(image_store, out, model, compile_model=False)
    assert "\n" not in str(err.value)
    assert list(out.iterdir()) == []
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda p: real(p)._replace(free=need))
    _, arrays = _extract(image_store, out, model, compile_model=False)
    assert np.array_equal(arrays["block1"], first["block1"])


def test_reductions_in_the_pass_equal_reducing_the_stored_maps(tmp_path, image_store, model):
    """flatten and pool2d computed in the pass are bit for bit the reductions of the stored maps; PCA
    projected in the pass (loadings fitted on a sample that is every row) equals the stored maps' PCA."""
    from layerfuse.reduce import fit_pca_sample, pca_sample_rows, project_maps, reduce_maps, reduce_store_pair

    _, stored = _extract(image_store, tmp_path / "maps", model, compile_model=False)
    rows = pca_sample_rows(h5py.File(image_store)["labels"][()], 10)
    assert np.array_equal(rows, np.arange(7))                   # a sample above the source's size: every row
    sample = tmp_path / "sample" / "block1.h5"
    extract_features(image_store, {"block1": sample}, layers=LAYERS, model=model, spec=BackboneSpec(), batch_size=4,
                     threads=2, precision="fp32", compile_model=False, image_rows=rows)
    pca = fit_pca_sample(sample, 3)
    reductions = {
        "block1-flatten": ("block1", lambda m: reduce_maps(m, "flatten", {"segment": 100})),
        "block1-pool2d": ("block1", lambda m: reduce_maps(m, "pool2d", {})),
        "block1-pca": ("block1", lambda m: project_maps(m, pca["mean"], pca["loadings"])),
    }
    outputs = {k: tmp_path / "reduced" / f"{k}.h5" for k in ["global", *reductions]}
    extract_features(image_store, outputs, layers=LAYERS, model=model, spec=BackboneSpec(), batch_size=4, threads=2,
                     precision="fp32", compile_model=False, reductions=reductions)
    read = {k: h5py.File(p)["features"][()] for k, p in outputs.items()}
    assert np.array_equal(read["global"], stored["global"])
    assert np.array_equal(read["block1-flatten"], reduce_maps(stored["block1"], "flatten", {"segment": 100}))
    assert np.array_equal(read["block1-pool2d"], reduce_maps(stored["block1"], "pool2d", {}))
    exact = reduce_store_pair(tmp_path / "maps" / "block1.h5", tmp_path / "maps" / "block1.h5", "pca",
                              {"n_components": 3})["source"]
    np.testing.assert_allclose(read["block1-pca"], exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())
    assert not (tmp_path / "reduced" / "block1.h5").exists()


def test_pca_in_a_pass_of_its_own_writes_the_main_pass_bytes_and_holds_its_loadings_only_there(
        tmp_path, image_store, model):
    """A PCA block projected in a pass of its own (through the early layers only, half a batch at a time,
    loadings read when it starts and dropped when it ends) writes what projecting it in the main pass writes,
    to float rounding (fp32 convolutions and small products may round otherwise at another batch size), and
    leaves the main pass's stores as they were; a pass that fails leaves no store of any pass behind."""
    from layerfuse.reduce import StoredProjection, reduce_maps

    rng = np.random.default_rng(1)
    d = 256 * 15 * 15                                           # block1's maps of a 64x64 image
    pca_path = tmp_path / "pca.h5"
    with h5py.File(pca_path, "w") as f:
        f["mean"] = rng.random(d, dtype=np.float32)
        f["loadings"] = rng.standard_normal((d, 5), dtype=np.float32)

    class Watched(StoredProjection):
        loads, releases = [], []

        def __call__(self, maps):
            if self.arrays is None:
                self.loads.append(len(maps))
            return super().__call__(maps)

        def release(self):
            self.releases.append(True)
            super().release()

    def run(out_dir, own_pass, projection):
        reductions = {"block1-pool2d": ("block1", lambda m: reduce_maps(m, "pool2d", {})),
                      "block1-pca": ("block1", projection)}
        outputs = {k: out_dir / f"{k}.h5" for k in ["global", *reductions]}
        facts = extract_features(image_store, outputs, layers=LAYERS, model=model, spec=BackboneSpec(), batch_size=4,
                                 threads=2, precision="fp32", compile_model=False, reductions=reductions,
                                 own_pass=own_pass)
        return facts, {k: h5py.File(p)["features"][()] for k, p in outputs.items()}

    facts_main, main = run(tmp_path / "main", (), StoredProjection(pca_path))
    projection = Watched(pca_path)
    facts_own, own = run(tmp_path / "own", ["block1-pca"], projection)
    assert (facts_main["passes"], facts_own["passes"]) == (1, 2)
    for key in ("global", "block1-pool2d"):
        assert main[key].tobytes() == own[key].tobytes(), key
    np.testing.assert_allclose(own["block1-pca"], main["block1-pca"], rtol=1e-5,
                               atol=1e-5 * np.abs(main["block1-pca"]).max())
    assert Watched.loads == [1] and Watched.releases == [True] and projection.arrays is None  # probe, then freed

    def fails(maps):
        raise RuntimeError("the own pass dies")

    with pytest.raises(RuntimeError, match="own pass dies"):
        run(tmp_path / "failed", ["block1-pca"], fails)
    assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").glob("*.h5"))


def test_reductions_on_the_device_equal_the_host_ones(tmp_path):
    """A pass on a GPU rounds and reduces its maps where they are (flatten, pool2d and a stored PCA model on
    torch tensors, the model copied to the maps' device once): run here on CPU tensors, the same rows as the
    host path's numpy, to float rounding, with the store's float16 rounding and C order from channels_last
    maps."""
    import torch

    from layerfuse.extract import _InPassReductions
    from layerfuse.reduce import StoredProjection, reduce_maps

    rng = np.random.default_rng(2)
    maps = torch.from_numpy(rng.random((5, 8, 6, 6), dtype=np.float32) * 4).contiguous(
        memory_format=torch.channels_last)
    pca_path = tmp_path / "pca.h5"
    with h5py.File(pca_path, "w") as f:
        f["mean"] = rng.random(8 * 6 * 6, dtype=np.float32)
        f["loadings"] = rng.standard_normal((8 * 6 * 6, 3), dtype=np.float32)
    reductions = {"b-flatten": ("b", lambda m: reduce_maps(m, "flatten", {"segment": 7})),   # a partial segment
                  "b-pool2d": ("b", lambda m: reduce_maps(m, "pool2d", {"region": 4})),
                  "b-pca": ("b", StoredProjection(pca_path))}
    batch = {"g": maps[:, :, 0, 0], "b": maps}
    host = _InPassReductions(["g"], reductions, "float16")(batch)
    device = _InPassReductions(["g"], reductions, "float16", on_device=True)(batch)
    stored = maps.to(torch.float16).numpy().astype(np.float32)
    assert reductions["b-pca"][1].on_device[1].dtype == torch.float32
    assert device["g"] is batch["g"]                                    # a plain store's tensor as it came
    for key in reductions:
        t = device[key]
        assert t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous(), key
        np.testing.assert_allclose(t.numpy(), host[key].numpy(), rtol=1e-5, atol=1e-5 * host[key].abs().max().item())
    np.testing.assert_array_equal(host["b-pool2d"].numpy(), reduce_maps(stored, "pool2d", {"region": 4}))
    assert host["b-flatten"].shape == (5, 42)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device: the GPU pass is not run")
def test_a_gpu_pass_writes_the_cpu_pass_stores_to_rounding(tmp_path, image_store, model):
    """Where a GPU exists the pass runs there in fp32, its reductions on the device: the stores match a CPU
    pass to float rounding."""
    from layerfuse.reduce import StoredProjection, reduce_maps

    rng = np.random.default_rng(3)
    pca_path = tmp_path / "pca.h5"
    with h5py.File(pca_path, "w") as f:                         # block1's maps of a 64x64 image, 5 components
        f["mean"] = rng.random(256 * 15 * 15, dtype=np.float32)
        f["loadings"] = rng.standard_normal((256 * 15 * 15, 5), dtype=np.float32)
    reductions = {"block1-flatten": ("block1", lambda m: reduce_maps(m, "flatten", {"segment": 100})),
                  "block1-pool2d": ("block1", lambda m: reduce_maps(m, "pool2d", {})),
                  "block1-pca": ("block1", StoredProjection(pca_path))}

    def run(device):
        outputs = {k: tmp_path / device / f"{k}.h5" for k in ["global", *reductions]}
        extract_features(image_store, outputs, layers=LAYERS, model=model, spec=BackboneSpec(), batch_size=4,
                         threads=2, precision="fp32", compile_model=False, reductions=reductions, device=device)
        assert all(h5py.File(p).attrs["device"] == device for p in outputs.values())
        return {k: h5py.File(p)["features"][()] for k, p in outputs.items()}

    gpu, cpu = run("cuda"), run("cpu")
    for key in gpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-3, atol=1e-3 * np.abs(cpu[key]).max())
