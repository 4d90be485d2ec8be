"""HDF5 stores: one documented layout, written atomically.

Every store holds

* ``features`` (or ``images``): one row per image: images chunked one per chunk, vectors in chunks
  of rows compressed losslessly (:func:`vector_compression`), spatial maps either one contiguous
  uncompressed dataset (:func:`create_contiguous`, written by :class:`RowWriter`) or compressed chunks
  of 32 images x 16 channels (:func:`create_store`);
* ``labels``: int64 class index per row;
* ``image_ids``: UTF-8 path of the image relative to its dataset root;

and attributes describing what produced it (``layer``, ``node``, ``weights_sha256``,
``preprocessing``, ``image_list_sha256``, ``layerfuse_version`` …).  Stores are
written to ``<name>.partial`` and renamed when complete, so a killed job never
leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import re
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

__all__ = ["atomic_path", "write_text_atomic", "create_store", "vector_compression", "create_contiguous",
           "open_feature_store", "writes_rows", "RowWriter", "read_store", "write_arrays", "read_arrays",
           "read_pair", "read_stacked_pair",
           "FILE_ALIGNMENT", "NO_CHUNK_CACHE"]

log = logging.getLogger("layerfuse.h5io")

STR_DTYPE = h5py.string_dtype("utf-8")


DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _disk_error(exc: BaseException) -> int | None:
    """The errno of a disk-full/unwritable error anywhere in ``exc``'s chain (h5py wraps them), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc.errno
        m = re.search(r"errno = (\d+)", str(exc))
        if m and int(m.group(1)) in DISK_ERRNOS:
            return int(m.group(1))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling of ``path``; rename it onto ``path`` on success only.

    A full disk, a file-size limit or an unwritable folder becomes one
    ``OSError`` naming ``path``; the temporary file is always removed.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        code = _disk_error(exc)
        if code is None and isinstance(exc, (FileExistsError, NotADirectoryError)):
            code = exc.errno
        if code is not None:
            raise OSError(code, f"cannot write {path}: {os.strerror(code)}") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


#: Channels per chunk of a compressed map store, and per column block of the streamed PCA in any store
#: (the same blocks, so a compressed and an uncompressed store give the same sums bit for bit).
MAP_CHUNK_CHANNELS = 16


def create_store(f: h5py.File, name: str, shape: tuple, dtype, *, compression: str | None = None,
                 vector_rows: int = 256):
    """Create a chunked dataset ``name`` of ``shape`` in an open file.

    Spatial maps ``(n, channels, h, w)`` are chunked 32 images x 16 channels, so
    both row blocks (flatten, pool2d) and channel blocks over all images (the
    one-pass PCA Gram matrix) read whole chunks, and compressed with ``compression``;
    vectors ``(n, d)`` are chunked ``vector_rows`` rows (a writer's batch: each chunk is written
    once) and always compressed (:func:`vector_compression`); other arrays are chunked per image.
    """
    n = shape[0]
    kwargs = {}
    if n == 0:
        chunks = None
    elif len(shape) == 4 and dtype != "uint8":
        chunks = (min(n, 32), min(shape[1], MAP_CHUNK_CHANNELS)) + tuple(shape[2:])
        kwargs = compression_options(compression)
    elif len(shape) == 2:
        chunks = (min(n, int(vector_rows)), shape[1])
        kwargs = vector_compression()
    else:
        chunks = (1,) + tuple(shape[1:])
        kwargs = compression_options(compression)
    return f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **kwargs)


#: ``h5py.File`` keywords for files written in whole chunks: each chunk goes to the file when written.
#: Why: a write that fails (full disk) from HDF5's chunk cache at close crashed the process (SIGSEGV
#: in h5py's dealloc); written through, the failure is an exception at the write or the close.
NO_CHUNK_CACHE = {"rdcc_nbytes": 0}


def vector_compression() -> dict:
    """``create_dataset`` keywords for every stored matrix of vectors (feature stores of global
    features and per-image reductions; the source and target of pair files): Blosc zstd, level 1,
    over byte-shuffled values; lossless.  Why not the maps' ``extract.compression``: on vectors of
    real images the byte shuffle beats the bit shuffle (flatten vectors 29% smaller, global 66%),
    at a few ms per batch (docs/benchmarks.md: Vector stores)."""
    return dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))


#: Direct I/O wants file offsets, lengths and memory aligned to the device's block size; 4 KiB covers
#: the usual 512-byte and 4-KiB devices.
DIRECT_ALIGN = 4096
#: ``h5py.File`` keywords that start every object of 64 KiB or more on a 4-KiB boundary, so the bytes of a
#: contiguous map dataset can be written with ``O_DIRECT`` (:class:`RowWriter`).
FILE_ALIGNMENT = {"alignment_threshold": 1 << 16, "alignment_interval": DIRECT_ALIGN}


def create_contiguous(f: h5py.File, name: str, shape: tuple, dtype) -> h5py.Dataset:
    """An uncompressed, unchunked dataset whose bytes are placed in the file at creation and never filled.

    Its rows are then written straight into those bytes by :class:`RowWriter`; a reader sees an
    ordinary dataset. Open ``f`` with :data:`FILE_ALIGNMENT` for the data to start on a 4-KiB boundary.
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)   # every row is written: no pass of zeros first
    dcpl.set_obj_track_times(False)                 # as h5py's create_dataset: no timestamp, same bytes each run
    space = h5py.h5s.create_simple(tuple(int(x) for x in shape))
    dsid = h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def writes_rows(shape: tuple, compression: str | None) -> bool:
    """Whether a ``features`` dataset of ``shape`` stored with ``compression`` is contiguous rows
    (:func:`create_contiguous`, filled by :class:`RowWriter`): uncompressed spatial maps, at least one row."""
    return compression in (None, "none") and len(shape) > 2 and shape[0] > 0


def open_feature_store(path: str | os.PathLike, shape: tuple, dtype, compression: str | None,
                       vector_rows: int = 256):
    """Create the file ``path`` with an empty ``features`` dataset: ``(h5py.File, dataset)``.

    Spatial maps are contiguous rows when :func:`writes_rows` (the file opened with
    :data:`FILE_ALIGNMENT`), else chunks with ``compression``; vectors are chunks of ``vector_rows``
    rows with :func:`vector_compression`.
    """
    if writes_rows(shape, compression):
        f = h5py.File(path, "w", **FILE_ALIGNMENT)
        return f, create_contiguous(f, "features", shape, dtype)
    f = h5py.File(path, "w", **NO_CHUNK_CACHE)
    return f, create_store(f, "features", shape, dtype, compression=compression, vector_rows=vector_rows)


def _pwrite_all(fd: int, data: memoryview, pos: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, pos)
        data, pos = data[done:], pos + done


class RowWriter:
    """Write blocks of rows of a :func:`create_contiguous` dataset straight into its bytes in the file.

    Fill :attr:`buffer` (up to ``max_rows`` rows, page-aligned memory reused from block to block),
    then call :meth:`write`. With ``direct=True`` every whole 4-KiB page of a block goes through an
    ``O_DIRECT`` descriptor, past the page cache, and the rest (a block that does not start on a page,
    a last partial page) through an ordinary one. Where the file system refuses ``O_DIRECT`` (or a
    write with it fails with ``EINVAL``) every write is ordinary, with one log line.

    Why: copying into the page cache was most of the cost of writing block maps (docs/benchmarks.md:
    Extraction and stores).  The file is the same either way; the data just is not left in the cache.
    """

    def __init__(self, path: str | os.PathLike, dset: h5py.Dataset, max_rows: int, direct: bool = True):
        self.offset = dset.id.get_offset()
        if self.offset is None:
            raise ValueError(f"{path}: dataset {dset.name} has no bytes in the file (not create_contiguous?)")
        self.row_bytes = dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64))
        self.n_rows = dset.shape[0]
        self._mem = mmap.mmap(-1, max(1, int(max_rows) * self.row_bytes))   # page-aligned
        self.buffer = np.frombuffer(self._mem, dset.dtype, count=int(max_rows) * self.row_bytes
                                    // dset.dtype.itemsize).reshape((int(max_rows),) + dset.shape[1:])
        self.path = str(path)
        self._fd = os.open(path, os.O_WRONLY)
        self._direct_fd = None
        if direct and hasattr(os, "O_DIRECT") and self.offset % DIRECT_ALIGN == 0:
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:
                log.info("%s: no O_DIRECT here (%s); buffered writes", path, exc.strerror)

    @property
    def direct(self) -> bool:
        """Whether writes still go past the page cache."""
        return self._direct_fd is not None

    def write(self, lo: int, n: int) -> None:
        """Write the first ``n`` rows of :attr:`buffer` as rows ``lo .. lo+n`` of the dataset."""
        if lo < 0 or n < 0 or lo + n > self.n_rows or n > len(self.buffer):
            raise IndexError(f"{self.path}: rows {lo}..{lo + n} outside 0..{self.n_rows} (buffer {len(self.buffer)})")
        data = memoryview(self._mem)[:n * self.row_bytes]
        pos = self.offset + lo * self.row_bytes
        done = 0
        if self._direct_fd is not None and pos % DIRECT_ALIGN == 0:
            done = len(data) // DIRECT_ALIGN * DIRECT_ALIGN
            try:
                _pwrite_all(self._direct_fd, data[:done], pos)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("%s: O_DIRECT write refused (%s); buffered writes", self.path, exc.strerror)
                os.close(self._direct_fd)
                self._direct_fd, done = None, 0
        _pwrite_all(self._fd, data[done:], pos + done)

    def close(self) -> None:
        for fd in (self._fd, self._direct_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._direct_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def compression_options(compression: str | None) -> dict:
    """``create_dataset`` keywords for ``zstd`` or ``lz4`` (Blosc: level 1 over bit-shuffled values, via
    ``hdf5plugin``), ``lzf`` or ``gzip`` (both byte-shuffled), or none (``None``/``"none"``); all lossless.

    Their speed and sizes on real block maps: docs/benchmarks.md (``benchmarks/extract.py``).
    Reading a zstd store needs ``import hdf5plugin`` (``import layerfuse`` does it).
    """
    if compression in (None, "none"):
        return {}
    if compression in ("zstd", "lz4"):
        return dict(hdf5plugin.Blosc(cname=compression, clevel=1, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    if compression in ("lzf", "gzip"):
        return dict(compression=compression, shuffle=True)
    raise ValueError(f"compression must be zstd, lz4, lzf, gzip or none, got {compression!r}")


def write_meta(f: h5py.File, labels, image_ids, attrs: dict | None = None) -> None:
    f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
    f.create_dataset("image_ids", data=np.asarray(list(image_ids), dtype=object), dtype=STR_DTYPE)
    for k, v in (attrs or {}).items():
        f.attrs[k] = v


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict | None = None,
                 vectors: tuple = ()) -> None:
    """Atomically write a flat mapping of arrays (and attributes) to ``path``; the 2-D arrays named in
    ``vectors`` are stored as a feature store's vectors (256-row chunks, :func:`vector_compression`)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", **NO_CHUNK_CACHE) as f:
        for k, v in arrays.items():
            v = np.asarray(v)
            if v.dtype.kind in "UO":
                f.create_dataset(k, data=v.astype(object), dtype=STR_DTYPE)
            elif k in vectors and v.ndim == 2 and v.size:
                create_store(f, k, v.shape, v.dtype)[...] = v
            else:
                f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def read_arrays(path: str | os.PathLike, names=None) -> tuple[dict[str, np.ndarray], dict]:
    """Read datasets (all, or ``names``) and attributes from ``path``."""
    with h5py.File(path, "r") as f:
        names = list(f.keys()) if names is None else names
        out = {}
        for k in names:
            d = f[k]
            out[k] = d.asstr()[()] if h5py.check_string_dtype(d.dtype) else d[()]
        return out, dict(f.attrs)


def read_store(path: str | os.PathLike, dataset: str = "features"):
    """Open a store lazily: returns (h5py.File, dataset, labels, image_ids); close the file after use."""
    f = h5py.File(path, "r")
    return f, f[dataset], f["labels"][()], f["image_ids"].asstr()[()]


def write_pair(path, source, target, source_labels, target_labels, attrs: dict | None = None,
               extra: dict | None = None) -> None:
    """Atomically write a source/target feature pair (the format of reduced, fused and adapted files);
    ``extra``: more arrays a saved model needs (a PCA's or TCA's coefficients)."""
    write_arrays(path, {"source": np.asarray(source, np.float32), "target": np.asarray(target, np.float32),
                        "source_labels": np.asarray(source_labels, np.int64),
                        "target_labels": np.asarray(target_labels, np.int64), **(extra or {})}, attrs,
                 vectors=("source", "target"))


def read_pair(path):
    """(source, target, source_labels, target_labels, attrs) from a pair file: float32 rows of one
    array (:func:`read_stacked_pair`).

    A fused pair of a local block holds the block's columns only, and in attribute ``global_pair`` the
    pair of the global features they are fused with (a path relative to its folder): its columns come
    first, as :func:`layerfuse.fusion.fuse` orders them, so the global vector is stored once per backbone
    instead of once per feature set."""
    stacked, n_source, ys, yt, attrs = read_stacked_pair(path)
    return stacked[:n_source], stacked[n_source:], ys, yt, attrs


def read_stacked_pair(path):
    """(X, n_source, source_labels, target_labels, attrs): a pair file's source rows over its target
    rows in one float32 array, as :meth:`layerfuse.tca.TCA.fit` takes them.  Each stored part is read
    straight into its rows and columns, so the pair is held once (a fused flatten pair of 100,000 images
    is 3.9 GB; joining its parts and stacking its domains held it twice)."""
    with contextlib.ExitStack() as files:
        f = files.enter_context(h5py.File(path, "r"))
        attrs = dict(f.attrs)
        ys, yt = f["source_labels"][()], f["target_labels"][()]
        parts = [f]
        if attrs.get("global_pair"):
            global_path = Path(path).parent / str(attrs["global_pair"])
            g = files.enter_context(h5py.File(global_path, "r"))
            for key, labels in (("source_labels", ys), ("target_labels", yt)):
                if not np.array_equal(g[key][()], labels):
                    raise ValueError(f"{path}: its rows do not match {global_path}, whose global features it "
                                     "extends; rerun fuse_features")
            parts = [g, f]
        n_source = len(ys)
        stacked = np.empty((n_source + len(yt), sum(p["source"].shape[1] for p in parts)), np.float32)
        lo = 0
        for part in parts:
            hi = lo + part["source"].shape[1]
            for key, rows in (("source", np.s_[:n_source]), ("target", np.s_[n_source:])):
                if part[key].size:                       # HDF5 selects nothing of an empty part
                    part[key].read_direct(stacked, dest_sel=(rows, np.s_[lo:hi]))
            lo = hi
    return stacked, n_source, ys, yt, attrs


def pair_shape(path) -> tuple[int, int, int]:
    """``(source rows, target rows, columns)`` of the arrays :func:`read_pair` returns, read from the
    files' metadata (no data)."""
    with h5py.File(path, "r") as f:
        ns, width = f["source"].shape
        nt = f["target"].shape[0]
        extends = f.attrs.get("global_pair")
    if extends:
        width += pair_shape(Path(path).parent / str(extends))[2]
    return int(ns), int(nt), int(width)


def read_labels(path, dataset: str = "labels") -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[dataset][()]
