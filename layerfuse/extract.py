"""One forward pass per batch, every requested layer to its own HDF5 store."""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torchvision.models.feature_extraction import create_feature_extractor
from tqdm import tqdm

from . import __version__
from .backbones import BackboneSpec, build_resnet50, fold_batchnorm, preprocess, resolve_device, resolve_precision
from .h5io import RowWriter, atomic_path, open_feature_store, write_meta, writes_rows
from .memory import reuse_large_allocations
from .weights import load_state_dict

__all__ = ["check_free_space", "extract_features", "feature_extractor", "feature_store_attrs", "gather_features",
           "load_backbone"]

log = logging.getLogger("layerfuse.extract")

# ``compile_model="auto"``: compile only fp32 passes that reach the network's deep half (where its FLOPs are)
# over enough images to repay a cold compile; bf16 and the early blocks gain nothing from it (measured:
# docs/benchmarks.md, "Measurements behind the code's choices").
COMPILE_MIN_IMAGES = 3000
SHALLOW_NODES = ("x", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2")


def _deep(nodes) -> bool:
    return any(node.split(".")[0] not in SHALLOW_NODES for node in nodes)


def _compiled(extractor, example, enabled: bool):
    """``torch.compile`` d ``extractor`` checked on ``example``, or ``extractor`` when disabled or failing."""
    if not enabled:
        return extractor
    try:
        fast = torch.compile(extractor, dynamic=False, options={"freezing": True})
        with torch.inference_mode():
            fast(example)
        return fast
    except Exception as exc:  # no C++ toolchain, unsupported platform ...: eager is always correct
        log.warning("torch.compile failed (%s: %s); extracting in eager mode", type(exc).__name__,
                    str(exc).splitlines()[0][:120] if str(exc) else "")
        return extractor


@contextlib.contextmanager
def _blosc_threads(n: int):
    """Let the Blosc filter (zstd/lz4 stores) compress each chunk with ``n`` threads inside the block.

    c-blosc reads ``BLOSC_NTHREADS`` at every call.  The forward pass and the writes take turns on the same
    cores, so the writes may use them all (docs/benchmarks.md, "Measurements behind the code's choices")."""
    old = os.environ.get("BLOSC_NTHREADS")
    os.environ["BLOSC_NTHREADS"] = str(max(1, int(n)))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BLOSC_NTHREADS", None)
        else:
            os.environ["BLOSC_NTHREADS"] = old


def load_backbone(weights_path: str | os.PathLike, spec: BackboneSpec, weights_sha256: str | None = None):
    """Build the ResNet-50 of ``spec`` with the (hash-checked) weights at ``weights_path``."""
    sd = load_state_dict(weights_path, weights_sha256)
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else 1000
    return build_resnet50(spec, sd, num_classes=num_classes)


def recorded_spec(weights_json) -> tuple[BackboneSpec, dict]:
    """(spec, record) of a weights file's JSON record."""
    record = json.loads(Path(weights_json).read_text())
    return BackboneSpec(record["architecture"], record["preprocessing"], record["maxpool_pad"]), record


def load_recorded_backbone(weights_pth, weights_json):
    """(model, spec, record) for a weights file and its JSON record (hash checked)."""
    spec, record = recorded_spec(weights_json)
    return load_backbone(weights_pth, spec, record["sha256"]), spec, record


def feature_store_attrs(layer: str, node: str, spec: BackboneSpec, weights_sha256: str, precision: str,
                        image_list_sha256: str, image_size: int, device: str = "cpu", **extra) -> dict:
    """The attributes every feature store carries: what was computed, by which weights, on which device
    (``cpu`` or ``cuda``: their features agree to rounding only), from which images."""
    return {"layer": layer, "node": node, "architecture": spec.architecture, "preprocessing": spec.preprocessing,
            "maxpool_pad": spec.maxpool_pad, "weights_sha256": weights_sha256, "precision": precision,
            "device": device, "image_list_sha256": image_list_sha256, "image_size": image_size, **extra,
            "layerfuse_version": __version__}


def feature_extractor(model, spec: BackboneSpec, nodes: dict[str, str], precision: str = "auto",
                      device: str = "auto"):
    """``(extractor, prepared, precision, device)``: ``extractor(prepared(uint8 batch))`` gives
    ``{key: tensor}`` for ``nodes`` ({torchvision node: key}), on ``device`` (``auto``: the GPU where there is
    one, :func:`~layerfuse.backbones.resolve_device`).

    BatchNorm is folded into the convs; bf16 runs the folded network in bf16 throughout (weights cast
    once), which on 2 AVX512-BF16 cores ran 1.25x the images/s of fp32 weights under autocast.
    """
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    compute_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # channels_last on either device: oneDNN's and cuDNN's fast convolutions (bf16 tensor cores) want it
    model = fold_batchnorm(model, keep=set(nodes)).to(device, compute_dtype, memory_format=torch.channels_last)
    extractor = create_feature_extractor(model, return_nodes=nodes).eval()

    def prepared(batch):
        if device != "cpu":      # the uint8 images cross to the device (a quarter of float32) and are prepared there
            batch = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        return preprocess(batch, spec).to(device, compute_dtype)

    return extractor, prepared, precision, device


def check_free_space(outputs: dict, shapes: dict, local_dtype: str = "float16") -> None:
    """Raise ``OSError`` (one line: the folder, the estimate, the space free) before any store is opened
    where the stores ``outputs`` ({key: path}) of ``shapes`` ({key: (rows, ...)}) would not fit.

    The estimate is the uncompressed size (vectors float32, maps ``local_dtype``): an upper bound for the
    compressed layouts, the size itself for ``compression: none``.
    """
    need: dict = {}
    for key, path in outputs.items():
        folder = Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        dtype = np.dtype("float32" if len(shapes[key]) == 2 else local_dtype)
        dev = os.stat(folder).st_dev                 # stores on one file system share its free space
        entry = need.setdefault(dev, [folder, 0, []])
        entry[1] += int(np.prod(shapes[key], dtype=np.int64)) * dtype.itemsize
        entry[2].append(key)
    for folder, size, keys in need.values():
        free = shutil.disk_usage(folder).free
        if size > free:
            rows = max(int(shapes[keys[0]][0]), 1)
            raise OSError(f"{folder}: too little disk for the stores of {', '.join(keys)}: about {size / 1e9:.1f} GB "
                          f"({size / rows / 1e6:.2f} MB per image x {rows} images), {free / 1e9:.1f} GB free; "
                          "free space, or store less (extract.local_dtype, extract.compression, local_layers)")


class _Stores:
    """The output stores of one pass (or of a gather of shards), each in a temporary file renamed on
    success (held by ``stack``), with its labels, ids and attributes.  :meth:`write` puts one batch of
    rows; an unsharded pass and the gather of its shards call the same methods in the same order, so
    they write the same bytes."""

    def __init__(self, stack, outputs: dict, shapes: dict, labels, image_ids, attrs: dict, *, local_dtype: str,
                 compression, batch_size: int, direct_io: bool):
        check_free_space(outputs, shapes, local_dtype)
        self.files, self.dsets, self.writers, self.buffers = {}, {}, {}, {}
        for key, path in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            shape = shapes[key]
            f, self.dsets[key] = open_feature_store(tmp, shape, "float32" if len(shape) == 2 else local_dtype,
                                                    compression, vector_rows=batch_size)
            stack.enter_context(f)
            if writes_rows(shape, compression):   # maps written row block by row block (RowWriter)
                self.writers[key] = stack.enter_context(RowWriter(tmp, self.dsets[key], batch_size,
                                                                  direct=direct_io))
            write_meta(f, labels, image_ids, attrs[key])
            self.files[key] = f

    def mark_compiled(self, compiled: bool) -> None:
        for f in self.files.values():
            f.attrs["compiled"] = compiled

    def write(self, lo: int, out: dict) -> None:
        """Rows ``lo ..`` of every store from ``out`` ({key: tensor}, any dtype and memory layout)."""
        for key, t in out.items():
            # The store wants C order and its dtype: one copy_ into a C-order buffer converts
            # and transposes the channels_last maps in a single pass (0.8 ms per image and map
            # on 2 cores, against 2.1 for .to(dtype).contiguous(); rounding as numpy's astype)
            if key in self.writers:   # the writer's own page-aligned buffer, then straight to the file
                torch.from_numpy(self.writers[key].buffer[:len(t)]).copy_(t)
                self.writers[key].write(lo, len(t))
                continue
            dtype = torch.float16 if self.dsets[key].dtype == np.float16 else torch.float32
            buf = self.buffers.get(key)
            if buf is None or buf.shape != t.shape:
                buf = self.buffers[key] = torch.empty(t.shape, dtype=dtype)
            buf.copy_(t)
            self.dsets[key][lo:lo + len(t)] = buf.numpy()

    def finish(self) -> None:
        for key, w in self.writers.items():
            self.files[key].attrs["direct_io"] = w.direct   # whether the maps went past the page cache


def _pass_rows(n_all: int, batch_size: int, rows=None, image_rows=None):
    """``(start, stop, index)`` of the image store rows a pass reads: all, one shard (``rows``) or a
    sample (``image_rows``, then ``index`` holds them and ``start, stop`` count them)."""
    start, stop = (0, n_all) if rows is None else (int(rows[0]), int(rows[1]))
    if start < 0 or start % batch_size or stop < start:
        raise ValueError(f"rows {rows}: a shard starts on a batch (a multiple of {batch_size}) before its end")
    start, stop = min(start, n_all), min(stop, n_all)     # a shard past the last image is empty
    index = None
    if image_rows is not None:
        index = np.asarray(image_rows, dtype=np.int64)
        if index.size and (np.any(np.diff(index) <= 0) or index[0] < 0 or index[-1] >= n_all):
            raise ValueError(f"image_rows must be sorted, unique rows of the {n_all} images")
        start, stop = 0, len(index)
    return start, stop, index


class _InPassReductions:
    """Called on a batch's ``{layer key: tensor}``: the tensors of the plain stores, and each reduction
    computed from its layer's maps as a map store would hold them (``local_dtype``, then float32).
    ``on_device``: the maps are rounded and reduced on the tensors' own device (a GPU's), so that only the
    reduced rows cross to the host; else on the host in numpy (the CPU's pass: the same bits as the reducers
    on stored maps)."""

    def __init__(self, plain: list[str], reductions: dict, local_dtype: str, on_device: bool = False):
        self.plain, self.reductions, self.local_dtype = plain, reductions, local_dtype
        self.on_device = on_device
        self.buffers = {}                               # per layer: the stored dtype, then float32, C order

    def _as_stored(self, layer: str, t):
        stored_dtype = getattr(torch, self.local_dtype)
        if self.on_device:                              # C order (the store's) in float32, where the maps are
            return t.to(stored_dtype).to(torch.float32, memory_format=torch.contiguous_format)
        if layer not in self.buffers or self.buffers[layer][0].shape != t.shape:
            self.buffers[layer] = (torch.empty(t.shape, dtype=stored_dtype),
                                   torch.empty(t.shape, dtype=torch.float32))
        stored, wide = self.buffers[layer]
        # one conversion per layer, in torch: numpy's float16 casts are slow
        return wide.copy_(stored.copy_(t)).numpy()

    def __call__(self, out: dict) -> dict:
        vals = {k: out[k] for k in self.plain}
        as_stored = {}
        for key, (lk, fn) in self.reductions.items():
            if lk not in as_stored:
                as_stored[lk] = self._as_stored(lk, out[lk])
            reduced = fn(as_stored[lk])
            vals[key] = reduced.to("cpu", torch.float32) if self.on_device else \
                torch.from_numpy(np.ascontiguousarray(reduced, dtype=np.float32))
        return vals


def extract_features(images_path: str | os.PathLike, outputs: dict[str, str | os.PathLike], *,
                     layers: dict[str, str], model, spec: BackboneSpec, weights_sha256: str = "",
                     batch_size: int = 32, precision: str = "auto", local_dtype: str = "float16",
                     compression: str | None = "none", threads: int | None = None,
                     overlap_writes: bool | str = "auto", compile_model: bool | str = "auto",
                     direct_io: bool = True, rows: tuple[int, int] | None = None, image_rows=None,
                     reductions: dict | None = None, own_pass=(), device: str = "auto") -> dict:
    """Run ``model`` over the image store and write one feature store per layer key.

    Parameters
    ----------
    images_path : path
        Image store (``images``, ``labels``, ``image_ids``) from :mod:`layerfuse.images`.
    outputs : dict
        {layer key: output path}; every key must be in ``layers``.
    layers : dict
        {layer key: torchvision node name}, e.g. ``{"global": "flatten", "block1": "layer1.0"}``.
    precision : {"auto", "fp32", "bf16"}
        ``bf16`` runs the (BatchNorm-folded) network in bfloat16; ``auto`` picks it where the hardware
        computes bfloat16 natively (AMX/AVX512-BF16 CPUs, Ampere+ GPUs), else fp32.
        The precision used is recorded in the store.  Stores are written as
        float32/``local_dtype`` either way.
    local_dtype : str
        dtype of spatial maps on disk (``float16`` halves the size; ReLU maps lose nothing
        a linear classifier sees).  Vectors (``global``) are always float32.
    compression : {"none", "lz4", "zstd", "lzf", "gzip"}
        How spatial maps are stored; all lossless.  ``none`` (or None) writes one contiguous
        dataset per store whose rows go straight into the file (:class:`~layerfuse.h5io.RowWriter`);
        the others write 32-image x 16-channel chunks through the HDF5 filter.
    direct_io : bool
        With ``compression="none"``, write the maps with ``O_DIRECT`` (past the page cache) where
        the file system allows it; the file is the same either way.

    device : {"auto", "cpu", "cuda"}
        Where the network and the in-pass reductions run (``extract.device``): ``auto`` is a GPU where torch sees
        one.  Recorded in each store; a GPU's features equal a CPU's to rounding only.
    compile_model : {"auto", True, False}
        Run the network through ``torch.compile`` (inductor, frozen weights, one
        static batch shape: the last batch is padded).  Same features to ~1e-6
        relative; ``auto`` compiles on CPU only fp32 passes beyond ``layer2`` over
        at least ``COMPILE_MIN_IMAGES`` images (where compiling repays its time; see the constant).
        Falls back to eager with a warning when compiling fails (no C++ compiler).
    overlap_writes : {"auto", True, False}
        Convert and compress batch *i* in a background thread while batch *i+1*
        runs through the network.  ``auto``: on a GPU only.  On a CPU the network
        and the compression share the cores, and the overlap slowed the forward
        pass by more than it hid (docs/benchmarks.md); there the writes run after
        each batch, compressing with ``threads`` Blosc threads.
    rows : (start, stop), optional
        Only these rows of the image store (one shard; ``start`` a multiple of ``batch_size``, so
        every batch holds the images it holds in a pass over all rows): the stores hold those rows.
        ``compile_model="auto"`` still decides by the whole store's size, so that
        :func:`gather_features` of the shards gives the unsharded pass's stores byte for byte.
    image_rows : sequence of int, optional
        Only these rows (sorted, unique; not with ``rows``): a sample of the store (PCA's fitting sample).
    reductions : dict, optional
        ``{output key: (layer key, function)}``: stores of per-image vectors computed in the pass from a
        layer's maps, which are never written whole. ``function(maps)`` takes a batch of maps as the map
        stores hold them (``local_dtype``, C order) and returns ``(n, d)`` float32 rows
        (:func:`layerfuse.reduce.reduce_maps`, :func:`layerfuse.reduce.project_maps`).
    own_pass : collection of str, optional
        Keys of ``reductions`` each computed in a pass of its own, after the main one, through the network
        up to its layer only; a function with a ``release()`` method (:class:`layerfuse.reduce.StoredProjection`)
        is released after its pass.  A PCA projection holds its loadings (3.1 MB per component for a
        256 x 55 x 55 block) only during its pass, for the cost of running the early layers once more.

    Returns a dict of timing facts (images/s, bytes per image per layer).
    """
    reductions = reductions or {}
    unknown = [k for k in outputs if k not in layers and k not in reductions]
    unknown += [lk for lk, _ in reductions.values() if lk not in layers]
    unknown += [k for k in own_pass if k not in reductions]
    if unknown:
        raise ValueError(f"layers {unknown} are not configured; configured: {sorted(layers)}")
    if rows is not None and image_rows is not None:
        raise ValueError("extract_features takes rows (a shard) or image_rows (a sample), not both")
    if threads:
        torch.set_num_threads(int(threads))
    settings = _PassSettings(outputs, layers, reductions, set(own_pass), model, spec, weights_sha256, batch_size,
                             precision, local_dtype, compression, overlap_writes, compile_model, direct_io, device)
    # the main pass writes every store but those of `own_pass`, each of which gets a pass of its own
    passes = [[k for k in outputs if k not in own_pass]] + [[k] for k in outputs if k in own_pass]
    passes = [keys for keys in passes if keys]

    with h5py.File(images_path, "r") as src:
        source = _ImageRows(src, batch_size, rows, image_rows)
        t0 = time.perf_counter()
        # every store is renamed into place only once every pass has written its own
        with contextlib.ExitStack() as files:
            done = []
            for keys in passes:
                with reuse_large_allocations():      # the heap a pass grew is trimmed before the next one
                    done.append(_one_pass(keys, files, source, settings))
                    gc.collect()                     # the pass's network (a graph module holds cycles)
        elapsed = time.perf_counter() - t0
    n = source.n
    precision, static = done[0]
    facts = {"images": n, "seconds": elapsed, "images_per_s": n / elapsed if elapsed else float("nan"),
             "precision": precision, "compiled": static, "passes": len(done)}
    facts.update({f"bytes_per_image_{k}": Path(p).stat().st_size / max(n, 1) for k, p in outputs.items()})
    log.info("extracted %d images in %.1f s (%.1f img/s, %s, %s, %d pass%s)", n, elapsed, facts["images_per_s"],
             precision, "compiled" if static else "eager", len(done), "" if len(done) == 1 else "es")
    return facts


@dataclass(frozen=True)
class _PassSettings:
    """What :func:`extract_features` was asked for, shared by its passes."""
    outputs: dict
    layers: dict
    reductions: dict
    own_pass: set
    model: object
    spec: BackboneSpec
    weights_sha256: str
    batch_size: int
    precision: str
    local_dtype: str
    compression: str | None
    overlap_writes: bool | str
    compile_model: bool | str
    direct_io: bool
    device: str


class _ImageRows:
    """The rows of an open image store that a pass reads (all, one shard or a sample), with their
    labels and ids; :meth:`read` gives images ``lo:hi`` of the pass."""

    def __init__(self, src, batch_size: int, rows=None, image_rows=None):
        self.images = src["images"]
        self.n_all = self.images.shape[0]
        self.image_list_sha256 = src.attrs.get("image_list_sha256", "")
        start, stop, self.index = _pass_rows(self.n_all, batch_size, rows, image_rows)
        self.start, self.n = start, max(stop - start, 0)
        if self.index is None:
            self.labels, self.image_ids = src["labels"][start:stop], src["image_ids"].asstr()[start:stop]
        else:
            self.labels, self.image_ids = src["labels"][()][self.index], src["image_ids"].asstr()[()][self.index]

    def read(self, lo: int, hi: int) -> np.ndarray:
        if self.index is None:
            return self.images[self.start + lo:self.start + hi]
        return self.images[self.index[lo:hi]]


def _one_pass(keys: list[str], files: contextlib.ExitStack, source: _ImageRows, s: _PassSettings) -> tuple[str, bool]:
    """Run the network (up to the nodes ``keys`` need) over ``source`` into ``keys``' stores, opened on
    ``files``; (precision, compiled)."""
    plain = [k for k in keys if k not in s.reductions]
    needed = {k: s.reductions[k] for k in keys if k in s.reductions}
    # A pass of its own runs half-batches (its rows still written a whole batch at a time): it holds a
    # block's loadings, and half a batch of early activations and projection buffers is 0.4 GB less
    # at 224x224. Maps and projections do not depend on the batch (tested), so neither do the stores.
    step = max(1, s.batch_size // 2) if keys[0] in s.own_pass else s.batch_size
    nodes = {s.layers[k]: k for k in plain + [lk for lk, _ in needed.values()]}
    extractor, prepared, precision, device = feature_extractor(s.model, s.spec, nodes, s.precision, s.device)
    overlap = device != "cpu" if s.overlap_writes == "auto" else s.overlap_writes
    reduced = _InPassReductions(plain, needed, s.local_dtype, on_device=device != "cpu")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_blosc_threads(1 if overlap else torch.get_num_threads()))
        # probe output shapes with one image
        with torch.inference_mode():
            probe = reduced(extractor(prepared(np.zeros((1,) + source.images.shape[1:], np.uint8))))
        attrs = {key: feature_store_attrs(key, s.layers[needed[key][0] if key in needed else key], s.spec,
                                          s.weights_sha256, precision, source.image_list_sha256,
                                          source.images.shape[1], device, batchnorm_folded=True) for key in keys}
        stores = _Stores(files, {k: s.outputs[k] for k in keys},
                         {k: (source.n,) + tuple(t.shape[1:]) for k, t in probe.items()}, source.labels,
                         source.image_ids, attrs, local_dtype=s.local_dtype, compression=s.compression,
                         batch_size=s.batch_size, direct_io=s.direct_io)
        bar = stack.enter_context(tqdm(total=source.n, desc="extract", unit="img", mininterval=2.0))

        def write(lo, out):
            stores.write(lo, out)
            bar.update(len(next(iter(out.values()))))

        use_compile = s.compile_model is True or (s.compile_model == "auto" and device == "cpu" and
                                                  precision == "fp32" and source.n_all >= COMPILE_MIN_IMAGES
                                                  and _deep(nodes))

        def padded(batch):  # the compiled graph has one static batch shape
            x = prepared(batch)
            if len(batch) < step:
                x = torch.cat([x, x.new_zeros((step - len(batch),) + x.shape[1:])])
            return x.contiguous(memory_format=torch.channels_last)

        run = _compiled(extractor, padded(source.read(0, step)), use_compile and source.n > 0)
        static = run is not extractor
        stores.mark_compiled(static)
        writer = stack.enter_context(ThreadPoolExecutor(max_workers=1)) if overlap else None
        reader = stack.enter_context(ThreadPoolExecutor(max_workers=1)) if overlap else None
        _forward_batches(source, s.batch_size, step, lambda sub: run(padded(sub) if static else prepared(sub)),
                         reduced, write, writer, reader)
        stores.finish()
    for _, fn in needed.values():
        if hasattr(fn, "release"):   # what the reduction holds (a PCA's loadings) goes before the next pass
            fn.release()
    return precision, static


def _forward_batches(source: _ImageRows, batch_size: int, step: int, forward, reduced, write, writer,
                     reader=None) -> None:
    """Every batch of ``source`` through ``forward`` ``step`` images at a time, then ``reduced`` and
    ``write`` (in ``writer``'s thread, if any, while the next batch runs); ``reader``'s thread, if any, reads
    the next batch of images while this one runs."""
    def read(lo):
        return source.read(lo, lo + batch_size)

    pending = None  # the write in flight (one batch: bounded memory, errors surface at .result())
    ahead = reader.submit(read, 0) if reader and source.n else None
    for lo in range(0, source.n, batch_size):
        batch = ahead.result() if ahead else read(lo)
        ahead = reader.submit(read, lo + batch_size) if reader and lo + batch_size < source.n else None
        parts = []
        for i in range(0, len(batch), step):
            sub = batch[i:i + step]
            with torch.inference_mode():
                out = forward(sub)
            parts.append(reduced({k: t[:len(sub)] for k, t in out.items()}))
        out = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if pending is not None:
            pending.result()
        pending = writer.submit(write, lo, out) if writer else write(lo, out)
    if pending is not None:
        pending.result()


def gather_features(images_path: str | os.PathLike, shards: list[dict], outputs: dict[str, str | os.PathLike], *,
                    attrs: dict, batch_size: int = 32, local_dtype: str = "float16", compression: str | None = "none",
                    direct_io: bool = True) -> None:
    """Write ``outputs`` ({layer key: path}) from the stores of consecutive shards (``shards``: one
    ``{layer key: path}`` per shard, in row order, each from :func:`extract_features` with ``rows``),
    in the batches and order an unsharded pass writes them: the same files, byte for byte.

    ``attrs`` ({layer key: attributes}) are what the unsharded pass would record
    (:func:`feature_store_attrs`); the shards must agree on the precision, compilation and device they ran with.
    """
    with h5py.File(images_path, "r") as src:
        labels = src["labels"][()]
        image_ids = src["image_ids"].asstr()[()]
    n = len(labels)
    with contextlib.ExitStack() as stack:
        stack.enter_context(reuse_large_allocations())
        opened = [{k: stack.enter_context(h5py.File(p, "r")) for k, p in shard.items()} for shard in shards]
        ran = {(str(f.attrs["precision"]), bool(f.attrs["compiled"]), str(f.attrs.get("device", "cpu")))
               for shard in opened for f in shard.values()}
        if len(ran) != 1:
            raise ValueError(f"the shards ran with different precisions, compilation or devices {sorted(ran)}: "
                             "set extract.precision, extract.compile and extract.device")
        (precision, compiled, device), = ran
        bounds, lo = [], 0
        for shard in opened:
            rows = {f["features"].shape[0] for f in shard.values()}
            count = rows.pop() if len(rows) == 1 else None
            if count is None or (count and lo % batch_size):
                raise ValueError(f"{next(iter(shard.values())).filename}: shard stores of unequal length, or a "
                                 f"shard that does not start on a batch of {batch_size}")
            bounds.append((lo, lo + count))
            lo = bounds[-1][1]
        if lo != n:
            raise ValueError(f"the shards hold {lo} rows, the image store {n}: rerun the extraction")
        first = opened[0]
        shapes = {k: (n,) + first[k]["features"].shape[1:] for k in outputs}
        stores = _Stores(stack, outputs, shapes, labels, image_ids,
                         {k: {**attrs[k], "precision": precision, "device": device} for k in outputs},
                         local_dtype=local_dtype,
                         compression=compression, batch_size=batch_size, direct_io=direct_io)
        stores.mark_compiled(compiled)
        for shard, (a, b) in zip(opened, bounds):
            for lo in range(a, b, batch_size):
                stores.write(lo, {k: torch.from_numpy(shard[k]["features"][lo - a:min(lo + batch_size, b) - a])
                                  for k in outputs})
        stores.finish()
