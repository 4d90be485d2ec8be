"""A corpus of bad and odd image files: each is kept, skipped with a recorded reason, or rejected in one line.

The corpus is built by the tests (nothing is committed); docs/operations.md "When things go wrong" counts its rows.
"""
from __future__ import annotations

import io
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from layerfuse.images import manifest_summary, prepare_domain, read_manifest, split_rows
from layerfuse.report import data_section


def _png(mode="RGB", size=(40, 30), fmt="PNG", colour=None, **kw) -> bytes:
    default = {"L": 128, "P": 3, "I;16": 40000, "LA": (128, 200), "RGBA": (200, 10, 10, 128),
               "CMYK": (10, 200, 30, 0)}
    im = Image.new(mode, size, colour if colour is not None else default.get(mode, (200, 10, 10)))
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _palette_transparent() -> bytes:
    im = Image.new("P", (20, 20), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    im = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, "PNG")
    return buf.getvalue()


# (file name in class "a", bytes, expected status, reason substring)
CORPUS = [
    ("corrupt.jpg", b"\xff\xd8\xff\xe0" + os.urandom(200), "skipped", "cannot decode"),
    ("truncated.jpg", _png(fmt="JPEG")[:90], "skipped", "cannot decode"),
    ("truncated.png", _png()[:60], "skipped", "cannot decode"),
    ("zero.jpg", b"", "skipped", "empty file"),
    ("text.jpg", b"this is a text file, not a JPEG\n", "skipped", "cannot decode"),
    ("photo.heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "skipped", "not an image extension (.heic)"),
    ("fake.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16, "skipped", "cannot decode"),
    ("tiny.png", _png(size=(1, 1)), "skipped", "too small (1x1"),
    ("bomb.png", _bomb(), "skipped", "exceeds"),
    ("deep16.png", _png("I;16"), "ok", ""),
    ("cmyk.jpg", _png("CMYK", fmt="JPEG"), "ok", ""),
    ("palette_alpha.png", _palette_transparent(), "ok", ""),
    ("grey_alpha.png", _png("LA"), "ok", ""),
    ("rgba.png", _png("RGBA"), "ok", ""),
    ("rotated.jpg", _exif_rotated(), "ok", ""),
    ("animated.gif", _animated_gif(), "ok", ""),
    ("plain.bmp", _png(fmt="BMP"), "ok", ""),
    ("spaced name é.png", _png(), "ok", ""),
    (".hidden.png", _png(), "skipped", "hidden file"),
    ("notes.txt", b"hello", "skipped", "not an image extension (.txt)"),
    ("UPPER.JPG", _png(fmt="JPEG"), "ok", ""),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    src, tgt = root / "source", root / "target"
    for cls in ("a", "b", "empty"):
        (src / cls).mkdir(parents=True)
        (tgt / cls).mkdir(parents=True)
    for name, data, _, _ in CORPUS:
        (src / "a" / name).write_bytes(data)
    (src / "a" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    with open(os.path.join(os.fsencode(src / "a"), b"latin1-\xe9.png"), "wb") as f:
        f.write(_png())
    (src / "a" / "nested").mkdir()
    (src / "b" / "only_one.png").write_bytes(_png(colour=(0, 0, 200)))       # a class with one image
    shared = _png(colour=(1, 2, 3))
    (src / "b" / "leak.png").write_bytes(shared)                             # also in the target
    (tgt / "a" / "t1.png").write_bytes(_png(colour=(9, 9, 9)))
    (tgt / "b" / "same_as_source.png").write_bytes(shared)
    domains = {"source": {"path": str(src)}, "target": {"path": str(tgt)}}
    out = {}
    for d in ("source", "target"):
        out[d] = prepare_domain(domains, d, size=32, manifest_path=root / f"{d}.tsv", store_path=root / f"{d}.h5")
    return root, out


@pytest.mark.parametrize("name,status,reason", [(n, s, r) for n, _, s, r in CORPUS], ids=[c[0] for c in CORPUS])
def test_corpus_entry(corpus, name, status, reason):
    root, _ = corpus
    rows = {r["image_id"]: r for r in read_manifest(root / "source.tsv")}
    row = rows[f"a/{name}"]
    assert row["status"] == status, row
    assert reason in row["reason"], row


def test_corpus_odd_paths_and_folders(corpus):
    """A symlink to nowhere, a non-UTF-8 name and a nested folder are skipped; an empty class is no error."""
    root, facts = corpus
    rows = {r["image_id"]: r for r in read_manifest(root / "source.tsv")}
    assert rows["a/dangling.jpg"]["reason"].startswith("unreadable")
    assert rows["a/nested"]["reason"] == "nested folder"
    assert [r["reason"] for k, r in rows.items() if k.startswith("a/latin1")] == ["file name is not valid UTF-8"]
    assert facts["source"]["classes"] == ["a", "b", "empty"]
    n_ok = sum(s == "ok" for _, _, s, _ in CORPUS) + 2
    with h5py.File(root / "source.h5") as f:
        assert f["images"].shape == (n_ok, 32, 32, 3) and f["images"].dtype == np.uint8
        assert (f["labels"][()] == 1).sum() == 2                          # the one-image class plus leak.png
    assert facts["source"]["skipped"] == sum(r["status"] == "skipped" for r in rows.values())
    assert rows["empty/"]["status"] == "dropped" and facts["source"]["dropped"] == ["empty"]


def test_duplicates_between_domains_are_reported(corpus, caplog):
    root, _ = corpus
    manifests = {"source": root / "source.tsv", "target": root / "target.tsv"}
    with caplog.at_level("WARNING", logger="layerfuse"):
        summary = manifest_summary(manifests)
    assert summary["duplicates"] == [("b/leak.png", "b/same_as_source.png")]
    assert "leaks into training" in caplog.text
    md = data_section(manifests)
    assert "byte-identical" in md and "`a/zero.jpg` | empty file" in md


def test_split_with_a_one_image_class_is_rejected_in_one_line(corpus):
    root, _ = corpus
    rows = read_manifest(root / "source.tsv")
    for r in rows:
        r["label"] = int(r["label"])
    one = [r for r in rows if r["image_id"] != "b/leak.png"]
    with pytest.raises(ValueError, match=r"class 'b' has 1 usable image") as exc:
        split_rows(one, 0.2, 0)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="both sides need one image per class"):
        split_rows(rows, 0.01, 0)



def test_manifest_rows_select_and_check_the_store(tmp_path):
    """A pooled store's rows follow the manifest order; a missing image or a label mismatch is one line."""
    import h5py

    from layerfuse.h5io import write_meta
    from layerfuse.images import write_manifest
    from layerfuse.layout import manifest_rows

    store = tmp_path / "pool.h5"
    with h5py.File(store, "w") as f:
        f["features"] = np.arange(4, dtype=np.float32)[:, None]
        write_meta(f, [0, 0, 1, 1], ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"])
    rows = [{"image_id": "b/2.jpg", "label": 1, "status": "ok"}, {"image_id": "a/1.jpg", "label": 0, "status": "ok"},
            {"image_id": "a/9.jpg", "label": 0, "status": "skipped", "reason": "corrupt"}]
    write_manifest(tmp_path / "m.tsv", rows)
    assert manifest_rows(store, tmp_path / "m.tsv").tolist() == [3, 0]
    assert manifest_rows(store, None) is None
    write_manifest(tmp_path / "missing.tsv", rows[:2] + [{"image_id": "c/1.jpg", "label": 2, "status": "ok"}])
    with pytest.raises(ValueError, match=r"pool.h5 has no row for 'c/1.jpg' listed in .*missing.tsv"):
        manifest_rows(store, tmp_path / "missing.tsv")
    write_manifest(tmp_path / "labels.tsv", [{"image_id": "a/2.jpg", "label": 1, "status": "ok"}])
    with pytest.raises(ValueError, match="labels in .*pool.h5 differ from .*labels.tsv"):
        manifest_rows(store, tmp_path / "labels.tsv")
