"""Content fingerprints of the inputs that live outside the workflow: image folders and user weight files.

Snakemake reruns a job when an input file is newer than its outputs; it does
not see a file added to a folder, and it reruns on a ``touch`` that changed
nothing.  :func:`refresh_fingerprint` runs every time the workflow is parsed
(main process only) and keeps one small JSON per folder or file listing every
file's relative path, size and SHA-256.  It rewrites that JSON only when the
content changed, so the JSON's mtime moves exactly when the content does; the
rules that read the folder or file take the JSON as an input.

Hashing every image at every parse would cost seconds on large datasets, so
a stat cache (``<name>.stat.json`` beside it) keeps each file's hash under its
size, mtime, ctime and inode: only files whose stat changed are read again.
ctime cannot be set back by a user, so content replaced with the old mtime
restored (``cp -p``, ``rsync -t``) is still read again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from .h5io import write_text_atomic
from .images import resolves_inside

__all__ = ["fingerprint_name", "scan_files", "refresh_fingerprint"]

VERSION = 1


def fingerprint_name(path: str) -> str:
    """``<folder or file name>-<8 hex of the path>``: one fingerprint per configured path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).name) or "input"
    return f"{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _walk(root: Path):
    """(relative path, stat or None) of every file under ``root`` (or ``root`` itself, a file).

    Symlinks are followed only where they resolve inside ``root``, as the image reader does
    (:func:`layerfuse.images.resolves_inside`), and a folder is entered once however many links lead
    to it; a link not followed is listed with ``None`` (only its presence counts).
    """
    if not root.is_dir():
        yield "", os.stat(root)
        return
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or not resolves_inside(dirpath, root):
            dirnames.clear()
            if real not in seen:
                yield os.path.relpath(dirpath, root) + "/", None
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            try:
                inside = not os.path.islink(full) or (os.path.exists(full) and resolves_inside(full, root))
                yield rel, os.stat(full) if inside else None
            except OSError:
                yield rel, None


def _sha256(path: str, limit: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while limit > 0 and (block := f.read(min(1 << 20, limit))):
            h.update(block)
            limit -= len(block)
    return h.hexdigest()


def scan_files(path: str | os.PathLike, cache: dict | None = None, max_bytes: int = 1 << 40) -> tuple[dict, dict]:
    """``(content, stat cache)`` of a folder (every file below it) or of one file.

    ``content`` maps each relative path to ``[size, sha256]`` (``sha256`` is
    ``"link"`` for a symlink that is not followed, the kind for a FIFO, socket
    or device, and ``"size"`` for a file above ``max_bytes``, which is never
    read); ``cache`` is the previous stat cache, reused for unchanged stats.
    """
    root = Path(path)
    cache = cache or {}
    content, new_cache = {}, {}
    for rel, st in _walk(root):
        if st is None:
            content[rel] = [0, "link"]
            continue
        if not stat.S_ISREG(st.st_mode):
            content[rel] = [0, "special"]
            continue
        if st.st_size > max_bytes:
            content[rel] = [st.st_size, "size"]
            continue
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        old = cache.get(rel)
        digest = old[1] if old and old[0] == key else _sha256(str(root / rel) if rel else str(root), max_bytes)
        content[rel] = [st.st_size, digest]
        new_cache[rel] = [key, digest]
    return content, new_cache


def refresh_fingerprint(path: str | os.PathLike, out: str | os.PathLike, max_bytes: int = 1 << 40) -> bool:
    """Write ``out`` (a JSON of ``path``'s content) if it is missing or the content changed; True if written."""
    out = Path(out)
    cache_path = out.with_name(out.stem + ".stat.json")
    try:
        cache = json.loads(cache_path.read_text())
        cache = cache if cache.get("version") == VERSION else {}
    except (OSError, ValueError):
        cache = {}
    content, new_cache = scan_files(path, cache.get("files"), max_bytes)
    record = json.dumps({"version": VERSION, "path": str(path), "files": content}, indent=0, sort_keys=True) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        changed = out.read_text() != record
    except OSError:
        changed = True
    if changed:
        write_text_atomic(out, record)
    write_text_atomic(cache_path, json.dumps({"version": VERSION, "files": new_cache}) + "\n")
    return changed
