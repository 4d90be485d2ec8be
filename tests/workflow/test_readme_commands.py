"""Every command in the README's code blocks runs: Snakemake commands as dry runs in a scratch copy of
the checkout's layout (as a user types them, without writing into the checkout), ``python -m layerfuse``
commands parsed by its own argument parser, so the README cannot drift from the workflow."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from layerfuse.__main__ import build_parser

from .helpers import REPO, SNAKEMAKE

README = (REPO / "README.md").read_text()
DATA = REPO.parent / "shared" / "data"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    cmds = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line.startswith((".venv/bin/snakemake", ".venv/bin/python -m layerfuse")):
                cmds.append(line)
    return cmds


COMMANDS = _commands()


def test_the_readme_has_commands():
    assert sum(c.startswith(".venv/bin/snakemake") for c in COMMANDS) >= 8
    assert any("predict" in c for c in COMMANDS) and any("--config" in c for c in COMMANDS)


@pytest.fixture(scope="module")
def own_images(tmp_path_factory):
    """The README's "my.yaml" with its folders pointed at a generated labelled source and flat target."""
    from layerfuse.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("readme")
    make_demo_dataset(root / "demo", n_classes=3, n_source=90, n_target=10, seed=0, size=32)  # > 256 images
    (root / "flat").mkdir()
    for i, p in enumerate(sorted((root / "demo/target").glob("*/*.png"))):
        p.rename(root / "flat" / f"{i}.png")
    text = next(b for b in _blocks("yaml") if b.startswith("# my.yaml"))
    cfg = yaml.safe_load(text)
    exp = next(iter(cfg["experiments"].values()))
    assert exp["target"]["labels"] == "none"
    text = text.replace(exp["source"]["path"], str(root / "demo/source")).replace(exp["target"]["path"],
                                                                                 str(root / "flat"))
    (root / "my.yaml").write_text(text)
    return root / "my.yaml"


@pytest.fixture(scope="module")
def scratch_checkout(tmp_path_factory):
    """A folder laid out as the checkout (its files linked, not copied) beside a link to ``../shared``: a dry
    run there fingerprints its inputs and locks ``.snakemake`` in the scratch folder, not in the checkout."""
    root = tmp_path_factory.mktemp("checkout")
    work = root / "layerfuse"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".snakemake", "results", "logs", "resources", "benchmarks", ".pytest_cache"):
            (work / entry.name).symlink_to(entry)
    (work / "benchmarks").mkdir()
    if (REPO.parent / "shared").exists():
        (root / "shared").symlink_to(REPO.parent / "shared")
    return work


# the presets' dry runs fingerprint ../shared/data's folders (seconds each): the full suite's
@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if "config/presets/" in c else c
                                     for c in COMMANDS if c.startswith(".venv/bin/snakemake")])
def test_snakemake_command_dry_runs(command, own_images, scratch_checkout):
    args = shlex.split(command)[1:]
    if "--report" in args:
        pytest.skip("the report needs a finished run: tests/workflow/test_end_to_end.py builds one")
    args = [str(own_images) if a == "my.yaml" else a for a in args]
    preset = next((a for a in args if a.startswith("config/presets/")), None)
    proc = subprocess.run([SNAKEMAKE, *args, "--dry-run", "--quiet", "rules"], cwd=scratch_checkout,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    missing = re.search(r"(?:dataset folder not found: |folder )(\S+)(?: not found)?", out)
    if preset and proc.returncode and "not found" in out and missing:
        assert "Traceback" not in out and out.count("config error") == 1, out[-2000:]
        if "supermarket" in preset or not DATA.is_dir():
            pytest.skip(f"{preset}: data not here ({missing.group(1)}); the error is one line")
    assert proc.returncode == 0, out[-3000:]


@pytest.mark.parametrize("command", [c for c in COMMANDS if "-m layerfuse" in c])
def test_layerfuse_command_parses(command):
    args = shlex.split(command)[3:]
    parsed = build_parser().parse_args(args)
    assert parsed.command == args[0]
    if parsed.command == "list-layers":
        proc = subprocess.run([sys.executable, "-m", "layerfuse", *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "layer1.0" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("args", [["list-layers"], ["--help"]])
def test_layerfuse_output_piped_into_head_ends_quietly(args):
    # `python -m layerfuse list-layers | head` is how a user skims the node names; the early close must
    # not print a BrokenPipeError traceback
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}      # a pipe's block buffering
    proc = subprocess.Popen([sys.executable, "-m", "layerfuse", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()                                   # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.slow                                  # builds the network once: the full suite's
def test_list_layers_answers_from_its_cache_without_torch(tmp_path):
    """The first call builds the network on meta tensors and keeps the answer in $LAYERFUSE_CACHE; the next
    imports no torch and prints the same; an unreadable cache file is listed afresh."""
    env = {**os.environ, "LAYERFUSE_CACHE": str(tmp_path)}
    code = ("import sys; from layerfuse.__main__ import main; main(['list-layers']); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")

    def call():
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout, proc.stderr.strip().splitlines()[-1]

    first, second = call(), call()
    assert first[1] == "torch imported" and second[1] == "no torch", (first[1], second[1])
    assert first[0] == second[0] and "layer1.0" in first[0] and "256 x 55 x 55" in first[0]
    (cached,) = (tmp_path / "layers").glob("*.json")
    cached.write_text("{not json")
    assert call() == first


def test_fit_pca_takes_the_cores_whose_column_blocks_fit(scratch_checkout):
    """`make run`'s workflow planned with 16 cores: each PCA fit gets the threads whose column blocks fit the
    job budget (layerfuse.job_memory.fit_pca_threads), not all 16; the same model on any number."""
    from layerfuse.config import load_schema
    from layerfuse.job_memory import fit_pca_threads

    proc = subprocess.run([SNAKEMAKE, "--cores", "16", "--dry-run", "all"], cwd=scratch_checkout,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    blocks = re.findall(r"rule fit_pca:\n((?: {4}.*\n)+)", out)          # each job's indented lines
    threads = [int(re.search(r"threads: (\d+)", b).group(1)) if "threads:" in b else 1 for b in blocks]
    schema = load_schema(REPO / "schemas/config.schema.yaml")
    expected = fit_pca_threads(16, n_sample=schema["properties"]["extract"]["properties"]["pca_sample"]["default"])
    assert threads and set(threads) == {expected} and 1 < expected < 16, (threads, expected)
