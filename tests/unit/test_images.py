"""Datasets as folders: class maps, manifests, and every kind of odd image file."""
import io
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from layerfuse.images import DomainSpec, decode_image, prepare_domain, read_manifest, resolve_classes


def _img(mode="RGB", size=(40, 30), fmt="PNG", **kw):
    colours = {"L": 128, "P": 3, "I;16": 40000, "I": 40000, "LA": (128, 200), "RGBA": (200, 10, 10, 128),
               "CMYK": (10, 200, 30, 0)}
    im = Image.new(mode, size, colours.get(mode, (200, 10, 10)))
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"),
                                      ("I;16", "PNG"), ("LA", "PNG"), ("RGB", "BMP"), ("RGB", "GIF")])
def test_decode_modes(mode, fmt):
    """Grey, alpha, palette, CMYK, 16-bit and other formats become size x size x 3 uint8."""
    out = decode_image(_img(mode, fmt=fmt), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_decode_alpha_on_white():
    """Transparent pixels are composited on white."""
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    assert (decode_image(buf.getvalue(), 8) == 255).all()


def test_decode_exif_rotation():
    """EXIF orientation 6 (rotate 90) is applied before resizing."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(buf.getvalue(), 40)
    # after rotating 90 degrees clockwise, the white half is on top
    assert out[:20].mean() > 200 and out[20:].mean() < 50


@pytest.mark.parametrize("data,match", [
    (b"", "empty file"),
    (b"this is text, not a jpeg", "cannot decode"),
    (_img(fmt="JPEG")[:60], "cannot decode"),
])
def test_decode_bad_bytes(data, match):
    with pytest.raises(ValueError, match=match):
        decode_image(data, 32)


def test_decompression_bomb_guard():
    """A 20000x20000 image is refused, not decoded into 1.2 GB."""
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, "PNG")
    with pytest.raises(ValueError, match="exceeds|bomb"):
        decode_image(buf.getvalue(), 32)


@pytest.fixture
def messy_dataset(tmp_path):
    """A source folder with good and bad files and a target with another class layout."""
    src = tmp_path / "src"
    for cls in ("cat", "dog", "emptyclass"):
        (src / cls).mkdir(parents=True)
    for i in range(4):
        (src / "cat" / f"c{i}.png").write_bytes(_img(size=(30 + i, 20)))
        (src / "dog" / f"d{i}.jpg").write_bytes(_img("RGB", fmt="JPEG"))
    (src / "cat" / ".DS_Store").write_bytes(b"\x00\x00")
    (src / "cat" / "zero.jpg").write_bytes(b"")
    (src / "cat" / "truncated.jpg").write_bytes(_img(fmt="JPEG")[:80])
    (src / "cat" / "notes.txt").write_text("hello")
    (src / "dog" / "grey.png").write_bytes(_img("L"))
    (src / "dog" / "cmyk.jpg").write_bytes(_img("CMYK", fmt="JPEG"))
    (src / "dog" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with open(os.path.join(os.fsencode(src / "dog"), b"bad\xff name.png"), "wb") as f:
        f.write(_img())
    (src / "dog" / "spaced name é.png").write_bytes(_img())
    tgt = tmp_path / "tgt"
    for cls in ("Cat", "Dog", "bird"):
        (tgt / cls).mkdir(parents=True)
        (tgt / cls / "x.png").write_bytes(_img())
    return src, tgt


def test_prepare_domain_skips_and_records(tmp_path, messy_dataset):
    """Bad files are skipped with a reason in the manifest; the store holds only good images."""
    src, tgt = messy_dataset
    domains = {"source": {"path": str(src)}, "target": {"path": str(tgt), "class_map": {"Cat": "cat", "Dog": "dog"}}}
    facts = prepare_domain(domains, "source", size=32, manifest_path=tmp_path / "m.tsv",
                           store_path=tmp_path / "s.h5")
    assert facts["classes"] == ["cat", "dog"]
    rows = {r["image_id"]: r for r in read_manifest(tmp_path / "m.tsv")}
    reasons = {k: r["reason"] for k, r in rows.items() if r["status"] == "skipped"}
    assert reasons["cat/.DS_Store"] == "hidden file"
    assert reasons["cat/zero.jpg"] == "empty file"
    assert "cannot decode" in reasons["cat/truncated.jpg"]
    assert "not an image extension" in reasons["cat/notes.txt"]
    assert "unreadable" in reasons["dog/dangling.jpg"]
    assert rows["dog/cmyk.jpg"]["status"] == "ok" and rows["dog/grey.png"]["status"] == "ok"
    assert rows["dog/spaced name é.png"]["status"] == "ok"
    assert [r for k, r in reasons.items() if k.startswith("dog/bad")] == ["file name is not valid UTF-8"]
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["images"].shape == (11, 32, 32, 3)
        assert sorted(set(f["labels"][()])) == [0, 1]
        assert len(f.attrs["image_list_sha256"]) == 64
    assert not list(tmp_path.glob("*.partial"))


def test_class_map_errors(tmp_path, messy_dataset):
    """A class map naming a missing folder, or domains with no common class, fail with the path."""
    src, tgt = messy_dataset
    with pytest.raises(ValueError, match="class_map names folder 'Cow'"):
        DomainSpec(str(tgt), {"Cow": "cow"}).folder_classes()
    with pytest.raises(ValueError, match="share no class"):
        resolve_classes(DomainSpec(str(src)), DomainSpec(str(tgt)))
    with pytest.raises(ValueError, match="dataset folder not found"):
        DomainSpec(str(tmp_path / "missing")).folder_classes()


def test_class_map_merge_and_drop(tmp_path, messy_dataset):
    """Several folders merge into one class; a null value drops a folder."""
    src, tgt = messy_dataset
    classes = resolve_classes(DomainSpec(str(src), {"dog": "cat"}),
                              DomainSpec(str(tgt), {"Cat": "cat", "Dog": "cat", "bird": None}))
    assert classes == ["cat"]


def test_split_is_stratified_and_seeded(tmp_path):
    """A split experiment gives disjoint, stratified, reproducible source and target lists."""
    root = tmp_path / "one"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            (root / cls / f"{i}.png").write_bytes(_img(size=(10 + i, 10)))
    domains = {"source": {"path": str(root)}}
    ids = {}
    for d in ("source", "target"):
        prepare_domain(domains, d, size=16, manifest_path=tmp_path / f"{d}.tsv", store_path=tmp_path / f"{d}.h5",
                       split={"test_size": 0.2, "seed": 3})
        ids[d] = [r["image_id"] for r in read_manifest(tmp_path / f"{d}.tsv")]
    assert len(ids["source"]) == 16 and len(ids["target"]) == 4
    assert not set(ids["source"]) & set(ids["target"])
    assert sorted(i.split("/")[0] for i in ids["target"]) == ["a", "a", "b", "b"]


def test_threaded_decode_matches_one_thread(messy_dataset):
    """Decoding with many threads gives the same rows, order and pixels as with one."""
    from layerfuse.images import build_domain

    src, _ = messy_dataset
    spec = DomainSpec(str(src))
    classes = resolve_classes(spec, None)
    rows1, images1 = build_domain(spec, classes, 32, workers=1)
    rows4, images4 = build_domain(spec, classes, 32, workers=4)
    assert rows1 == rows4
    assert images1.shape[0] == sum(r["status"] == "ok" for r in rows1) > 0
    assert np.array_equal(images1, images4)


def test_unlabelled_target_is_scanned_below_any_folder(tmp_path):
    """``labels: none``: every image anywhere below the folder, label -1, classes from the source;
    hidden and symlinked folders are not entered and say so."""
    import io

    from PIL import Image

    from layerfuse.images import prepare_domain, read_manifest

    def png(c):
        buf = io.BytesIO()
        Image.new("RGB", (20, 20), (c, 0, 0)).save(buf, "PNG")
        return buf.getvalue()

    for c in ("cat", "dog"):
        (tmp_path / "s" / c).mkdir(parents=True)
        (tmp_path / "s" / c / "1.png").write_bytes(png(10 if c == "cat" else 200))
        (tmp_path / "s" / c / "2.png").write_bytes(png(20 if c == "cat" else 210))
    t = tmp_path / "t"
    (t / "day1" / "cam").mkdir(parents=True)
    (t / ".cache").mkdir()
    (t / "flat.png").write_bytes(png(30))
    (t / "day1" / "cam" / "deep.png").write_bytes(png(40))
    (t / ".cache" / "hidden.png").write_bytes(png(50))
    (t / "elsewhere").symlink_to(tmp_path / "s" / "cat", target_is_directory=True)
    domains = {"source": {"path": str(tmp_path / "s")}, "target": {"path": str(t), "labels": "none"}}
    facts = prepare_domain(domains, "target", size=32, manifest_path=tmp_path / "t.tsv", store_path=tmp_path / "t.h5")
    rows = {r["image_id"]: r for r in read_manifest(tmp_path / "t.tsv")}
    assert facts["classes"] == ["cat", "dog"] and facts["kept"] == 2
    assert {k for k, r in rows.items() if r["status"] == "ok"} == {"flat.png", "day1/cam/deep.png"}
    assert all(r["label"] == "-1" for r in rows.values())
    assert rows[".cache/"]["reason"] == "hidden folder"
    assert rows["elsewhere/"]["reason"] == "symlinked folder (not followed)"


@pytest.mark.slow                      # 2,000 images written and decoded twice (6 s): the full suite
def test_prepare_domain_streams_decoded_images_into_the_store(tmp_path):
    """The store gets the decoded images block by block, as they come: the same pixels as decoding the
    domain into one array, at a fraction of that array's memory (a 100,000-image source is 15 GB)."""
    import tracemalloc

    from PIL import Image

    from layerfuse.images import build_domain

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(1000):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "src" / c / f"{i}.png")
    domains = {"source": {"path": str(tmp_path / "src")}}
    size = 96
    whole = 2000 * size * size * 3
    tracemalloc.start()
    prepare_domain(domains, "source", size=size, manifest_path=tmp_path / "m.tsv", store_path=tmp_path / "s.h5")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * whole, (peak, whole)
    _, images = build_domain(DomainSpec(str(tmp_path / "src")), ["a", "b"], size, workers=2)
    with h5py.File(tmp_path / "s.h5") as f:
        np.testing.assert_array_equal(f["images"][()], images)
