"""Helpers for the workflow tests: real Snakemake subprocesses on small configs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("config.yaml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake_cmd(workdir: Path, *args: str, config: Path = CONFIG, cores: int = 2) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(config), "--cores", str(cores), *args]


def snakemake(workdir: Path, *args: str, config: Path = CONFIG, check: bool = True,
              cores: int = 2) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, *args, config=config, cores=cores)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned_jobs(workdir: Path, config: Path = CONFIG, *extra: str) -> dict[str, int]:
    """{rule: count} of what a dry run would execute."""
    out = snakemake(workdir, "--dry-run", *extra, config=config).stdout
    jobs = {}
    if "Job stats:" not in out:
        return jobs
    table = out.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def variant(tmp_path: Path, name: str, **changes) -> Path:
    cfg = yaml.safe_load(CONFIG.read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def render_in_browser(page: Path, screenshot: Path, height: int = 2600) -> str:
    """``page`` rendered in headless Chromium (as docs/screenshots/take.sh takes the README's pictures): a
    1400-px-wide screenshot written to ``screenshot``, and the DOM after the page's scripts ran. Skips the
    test where no Chromium is installed."""
    import shutil
    import tempfile

    import pytest

    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        pytest.skip(f"no headless browser here ({', '.join(BROWSERS)}): the report is checked as HTML only")
    with tempfile.TemporaryDirectory() as profile:
        flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
                 "--hide-scrollbars", f"--window-size=1400,{height}", "--virtual-time-budget=8000"]
        subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120,
                       check=True)
        dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                             check=True).stdout
    return dom


PICK_ORANGE, COUNTS_BLUE = (255, 127, 14), (31, 119, 180)   # matplotlib's C1 and C0: the landing figure's bars


def assert_landing_page_shows(report: Path, tmp: Path, experiments: str, bars: tuple[int, int, int]) -> None:
    """In a real browser, the report's landing page names its run's ``experiments`` only and shows the landing
    figure above the fold (what the README's screenshot shows): its image is in the rendered page, and the
    first 1,350 px of a 1,400-px-wide window hold at least 500 pixels of the figure's ``bars`` colour."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    dom = render_in_browser(report, tmp / "landing.png")
    assert f"Experiments in this run: {experiments}." in dom
    figure = re.search(r'<img alt="each experiment\'s pick[^"]*" src="data:image/png;base64,([^"]+)"', dom)
    assert figure, "the landing figure is not in the rendered page"
    assert Image.open(io.BytesIO(base64.b64decode(figure.group(1)))).width >= 800
    shot = np.asarray(Image.open(tmp / "landing.png").convert("RGB"))[:1350].astype(int)
    assert (np.abs(shot - np.array(bars)).max(axis=2) <= 12).sum() >= 500, "the figure's bars are not in view"
