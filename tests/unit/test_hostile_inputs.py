"""Hostile inputs: no code execution, no hang, no unbounded read, no silent loss, deterministic reasons.

docs/operations.md "When things go wrong" counts these cases with those of ``test_bad_inputs.py``.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from layerfuse.config import ConfigError, check_config, check_duplicate_keys
from layerfuse.images import (DECODE_PEAK_BYTES, decode_image, decode_workers, prepare_domain, read_image_bytes,
                              read_manifest)
from layerfuse.report import data_section

PICKLE_BOMB = textwrap.dedent("""
    import os, pickle, sys
    class Bomb:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[2],))
    with open(sys.argv[1], "wb") as f:
        pickle.dump({"weight": Bomb()}, f)
""")


def _plant_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", PICKLE_BOMB, str(path), str(marker)], check=True)


def _png(colour=(200, 10, 10), size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_planted_pickle_in_the_torch_hub_cache_is_refused_not_run(tmp_path, monkeypatch):
    """``weights: IMAGENET1K_V1`` with a pickle planted under torchvision's cached name: one line, no code run."""
    from layerfuse.stages import prepare_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "pwned"
    planted = tmp_path / "torch/hub/checkpoints/resnet50-0676ba61.pth"
    _plant_pickle(planted, marker)
    with pytest.raises(ValueError, match=r"resnet50-0676ba61.pth: sha256 .* does not start with 0676ba61"):
        prepare_weights({"weights": "IMAGENET1K_V1"}, None, tmp_path / "w.pth", tmp_path / "w.json")
    assert not marker.exists()
    assert not (tmp_path / "w.pth").exists() and not (tmp_path / "w.json").exists()


def test_planted_pickle_as_a_user_pth_is_refused_not_run(tmp_path):
    from layerfuse.stages import prepare_weights

    marker = tmp_path / "pwned"
    _plant_pickle(tmp_path / "user.pth", marker)
    with pytest.raises(ValueError, match=r"user.pth: not a readable torch state_dict"):
        prepare_weights({"weights": str(tmp_path / "user.pth")}, None, tmp_path / "w.pth", tmp_path / "w.json")
    assert not marker.exists()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.png").write_bytes(_png())
    return root


def test_fifo_is_skipped_without_hanging(folder):
    os.mkfifo(folder / "a" / "pipe.jpg")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^not a regular file \(FIFO\)$"):
        read_image_bytes(folder / "a" / "pipe.jpg", folder, 1 << 20)
    assert time.monotonic() - start < 5


def test_symlink_to_dev_zero_is_not_followed(folder):
    (folder / "a" / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="symlink to a file outside the dataset folder"):
        read_image_bytes(folder / "a" / "zero.jpg", folder, 1 << 20)


def test_symlink_outside_the_folder_is_refused_inside_is_followed(folder, tmp_path):
    (tmp_path / "secret.png").write_bytes(_png())
    (folder / "a" / "out.png").symlink_to(tmp_path / "secret.png")
    (folder / "a" / "in.png").symlink_to(folder / "a" / "ok.png")
    with pytest.raises(ValueError, match="outside the dataset folder"):
        read_image_bytes(folder / "a" / "out.png", folder, 1 << 20)
    assert read_image_bytes(folder / "a" / "in.png", folder, 1 << 20) == _png()


def test_huge_sparse_file_is_skipped_unread(folder):
    """A 6 GB sparse ``.jpg`` is refused by its size, before any byte is read."""
    with open(folder / "a" / "huge.jpg", "wb") as f:
        f.truncate(6 << 30)
    with pytest.raises(ValueError, match=r"6144.0 MB exceeds images.max_file_mb \(64 MB\)"):
        read_image_bytes(folder / "a" / "huge.jpg", folder, 64 << 20)


def test_eps_named_jpg_never_reaches_ghostscript():
    """Pillow may only use layerfuse's formats: PostScript content is refused whatever its name."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\nnewpath 0 0 moveto 40 40 lineto stroke\n"
    with pytest.raises(ValueError, match=r"^cannot decode \(not one of the formats JPEG, PNG"):
        decode_image(eps, 32)


def test_skip_reasons_carry_no_memory_address():
    """Reasons repeat run to run (no ``<_io.BytesIO object at 0x…>``), so ``tables.md`` is reproducible."""
    reasons = set()
    for data in (b"this is a text file\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a" + b"\x01" * 20):
        with pytest.raises(ValueError) as exc:
            decode_image(data, 32)
        reasons.add(str(exc.value))
        assert " at 0x" not in str(exc.value)
    with pytest.raises(ValueError) as again:
        decode_image(b"this is a text file\n", 32)
    assert str(again.value) in reasons


def test_16_bit_image_decodes_without_float64_copies():
    """A 16-bit 3000² PNG: numpy's peak stays under 6 bytes a pixel (the float64 path needed over 16)."""
    import tracemalloc

    arr = (np.arange(3000 * 3000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(3000, 3000)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    tracemalloc.start()
    try:
        out = decode_image(buf.getvalue(), 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and out.max() > 0
    assert peak < 6 * arr.size, peak


def test_decode_threads_are_bounded_by_memory():
    assert decode_workers(100) == 1
    assert decode_workers(2 * DECODE_PEAK_BYTES / 2**20) == min(2, os.cpu_count() or 1)
    assert decode_workers() == min(8, os.cpu_count() or 1)


def test_out_of_memory_while_decoding_is_one_line_naming_the_file(tmp_path):
    """Under an address-space limit a 7999² 16-bit PNG (a few KB) fails in one line naming it, no traceback."""
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    buf = io.BytesIO()
    Image.new("I;16", (7999, 7999), 40000).save(buf, "PNG")
    (root / "a" / "deep.png").write_bytes(buf.getvalue())
    (root / "b" / "ok.png").write_bytes(_png())
    script = textwrap.dedent("""
        import resource, sys
        from layerfuse._snakemake import run
        from layerfuse.images import prepare_domain
        import numpy, PIL.Image, h5py
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (60 << 20), vm + (60 << 20)))
        run(lambda: prepare_domain({"source": {"path": sys.argv[1]}}, "source", size=32,
                                   manifest_path=sys.argv[2], store_path=sys.argv[3], memory_mb=100))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "m.tsv"), str(tmp_path / "s.h5")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "decode data" not in line]  # tqdm
    assert len(lines) == 1 and "deep.png: out of memory while decoding it" in lines[0], proc.stderr
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "m.tsv").exists()


@pytest.fixture
def two_domains(tmp_path):
    """Source classes a, b, src_only, .hidden, dropme, empty; target classes a, b, tgt_only, empty."""
    src, tgt = tmp_path / "s", tmp_path / "t"
    for root, classes in ((src, ["a", "b", "src_only", ".hidden", "dropme"]), (tgt, ["a", "b", "tgt_only"])):
        for i, c in enumerate(classes):
            (root / c).mkdir(parents=True)
            for j in range(1 if c == "b" and root == src else 2):
                (root / c / f"{j}.png").write_bytes(_png((40 * i, 7 * j, 90)))
    (src / "empty").mkdir()
    (tgt / "empty").mkdir()
    domains = {"source": {"path": str(src), "class_map": {"dropme": None}}, "target": {"path": str(tgt)}}
    manifests = {}
    for d in ("source", "target"):
        manifests[d] = tmp_path / f"{d}.tsv"
        prepare_domain(domains, d, size=32, manifest_path=manifests[d], store_path=tmp_path / f"{d}.h5")
    return manifests


@pytest.mark.parametrize("domain,folder,reason", [
    ("source", "src_only/", "class 'src_only' is not in the target"),
    ("target", "tgt_only/", "class 'tgt_only' is not in the source"),
    ("source", ".hidden/", "hidden class folder"),
    ("source", "dropme/", "dropped by class_map (null)"),
    ("source", "empty/", "empty class folder"),
    ("target", "empty/", "empty class folder"),
])
def test_every_dropped_class_folder_is_named(two_domains, domain, folder, reason, caplog):
    rows = {r["image_id"]: r for r in read_manifest(two_domains[domain])}
    assert rows[folder]["status"] == "dropped" and rows[folder]["reason"] == reason
    assert f"- {domain} `{folder}`: {reason}" in data_section(two_domains)


def test_one_image_class_is_warned_in_the_report(two_domains):
    section = data_section(two_domains)
    assert "fewer than 2 usable images: source `b` (1)." in section


def test_a_source_of_one_usable_class_stops_at_image_preparation(tmp_path):
    """Files of two classes, but one class's files are all unusable: the run stops before extraction."""
    (tmp_path / "s" / "a").mkdir(parents=True)
    (tmp_path / "s" / "b").mkdir()
    (tmp_path / "s" / "a" / "x.png").write_bytes(_png())
    (tmp_path / "s" / "b" / "y.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"the source has usable images of 1 class\(es\) \(a\)"):
        prepare_domain({"source": {"path": str(tmp_path / "s")}}, "source", size=32,
                       manifest_path=tmp_path / "m.tsv", store_path=tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


def test_duplicate_yaml_key_is_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("experiments:\n  x: {synthetic: {}}\nsvm:\n  C: 1.0\n  C: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: key 'C' is given twice"):
        check_duplicate_keys([cfg])
    cfg.write_text("experiments:\n  x: {synthetic: {}}\nsvm:\n  C: 1.0\n")
    check_duplicate_keys([cfg])


def test_dataset_path_that_is_a_file_is_called_a_file(tmp_path):
    from layerfuse.config import validate_config

    from ..conftest import REPO

    (tmp_path / "notes.txt").write_text("x")
    cfg = validate_config({"experiments": {"e": {"source": {"path": str(tmp_path / "notes.txt")},
                                                 "target": {"path": str(tmp_path)}}}},
                          REPO / "schemas/config.schema.yaml")
    with pytest.raises(ConfigError, match=r"experiments.e.source.path: .*notes.txt is a file, not a folder"):
        check_config(cfg)


def test_size_checks_count_usable_images_once_a_manifest_is_known(tmp_path):
    """Three target files, two unreadable: after their preparation, TCA dims above the usable total stop the run."""
    from layerfuse.config import check_data_sizes, validate_config

    from ..conftest import REPO

    for side, n in (("s", 3), ("t", 3)):
        for c in ("a", "b"):
            (tmp_path / side / c).mkdir(parents=True)
            for i in range(n):
                bad = side == "t" and c == "a" and i > 0
                (tmp_path / side / c / f"{i}.png").write_bytes(b"junk" if bad else _png((60 * i, 9, 9)))
    domains = {"source": {"path": str(tmp_path / "s")}, "target": {"path": str(tmp_path / "t")}}
    cfg = validate_config({"experiments": {"e": dict(domains)}, "tca": {"dims": [11]}, "reducers": {}},
                          REPO / "schemas/config.schema.yaml")
    results = tmp_path / "results"
    check_data_sizes(cfg, results)                                     # 12 files: 11 dims pass before any run
    for d in ("source", "target"):
        prepare_domain(domains, d, size=32, manifest_path=results / "e/manifest" / f"{d}.tsv",
                       store_path=tmp_path / f"{d}.h5")
    with pytest.raises(ConfigError, match=r"tca.dims: 11 components exceed the 10 images of experiment 'e'"):
        check_data_sizes(cfg, results)
    (tmp_path / "t" / "a" / "new.png").write_bytes(_png())             # the manifest is stale: file counts again
    check_data_sizes(cfg, results)


def test_capped_tca_dims_are_recorded_in_the_scores_and_tables(tmp_path, rng):
    """An embedding narrower than the dims asked for: the row keeps ``tca-5`` and records the 3 used."""
    from layerfuse.h5io import write_pair
    from layerfuse.stages import evaluate_svm, aggregate_scores

    ys, yt = np.repeat([0, 1], 10), np.repeat([0, 1], 5)
    xs, xt = rng.randn(20, 6) + ys[:, None], rng.randn(10, 6) + yt[:, None]
    write_pair(tmp_path / "fused.h5", xs, xt, ys, yt, {"local_width": 4})
    write_pair(tmp_path / "tca.h5", xs[:, :3], xt[:, :3], ys, yt)
    meta = {"experiment": "e", "backbone": "b", "featureset": "block1-pca", "n_source": 20, "n_target": 10}
    rows = evaluate_svm({"none": tmp_path / "fused.h5", "tca": tmp_path / "tca.h5"}, ["none", "tca-5"],
                            {"C": 1.0, "class_weight": None, "max_iter": 1000, "center": "domain"}, meta,
                            tmp_path / "scores.csv")
    assert [(r["n_components"], r["n_components_used"], r["local_width"]) for r in rows] == \
        [("", "", 4)] * 2 + [(5, 3, 4)] * 2                                # each at both centrings
    text = aggregate_scores([tmp_path / "scores.csv"], tmp_path / "acc.csv", tmp_path / "tables.md")
    assert "**TCA dims capped** (fewer usable images than components): b block1-pca tca-5 used 3." in text


def test_fingerprint_survives_a_symlink_loop_and_ignores_links_out(tmp_path):
    """A folder linking to its ancestor is walked once; a link out of the folder counts only by its presence."""
    from layerfuse.fingerprint import scan_files

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(_png())
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (tmp_path / "secret.png").write_bytes(b"secret")
    (root / "a" / "out.png").symlink_to(tmp_path / "secret.png")
    content, _ = scan_files(root)
    assert content["a/x.png"][1] != "link" and content["a/out.png"] == [0, "link"]
    assert not any(k.startswith("a/loop/a") for k in content)


@pytest.mark.parametrize("argv, runs", [
    (["snakemake", "--cores", "2"], True),
    (["snakemake", "--cores", "2", "--configfile", "my.yaml", "all"], True),
    (["snakemake", "-n"], False),
    (["snakemake", "-np", "--cores", "1"], False),
    (["snakemake", "--dry-run"], False),
    (["snakemake", "--report", "report.html"], False),
    (["snakemake", "--report=report.html"], False),
    (["snakemake", "--lint"], False),
    (["snakemake", "-p", "--cores", "1"], True),
])
def test_runs_jobs_reads_the_invocation(argv, runs):
    """Only invocations that start jobs are refused while a run is live (a dry run, a report, a lint are not)."""
    from layerfuse._snakemake import runs_jobs

    assert runs_jobs(argv) is runs
