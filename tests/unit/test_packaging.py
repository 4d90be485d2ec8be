"""What the package claims about itself: pins that agree everywhere, and a wheel that carries its data."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_requirements_pyproject_and_envs_pin_the_same_versions():
    """requirements.txt is exactly pyproject's dependencies and extras; every pin in envs/ is one of them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra])
    required = _pins((REPO / "requirements.txt").read_text().splitlines())
    assert required == declared
    for env in sorted((REPO / "envs").glob("*.yaml")):
        pins = _pins(env.read_text().splitlines())
        assert pins and all(declared.get(k) == v for k, v in pins.items()), env.name


@pytest.mark.slow
def test_an_installed_wheel_reads_the_paper_tables(tmp_path):
    """A wheel built from the checkout carries every data file the package reads: installed (not editable)
    into a bare folder, it loads the paper's tables."""
    src = tmp_path / "src"                       # a copy of what a clean checkout holds: setuptools builds in place
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "layerfuse", src / "layerfuse", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("layerfuse-*.whl")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    code = ("import layerfuse.report as r, pathlib; t = r.load_paper_tables(); "
            "assert pathlib.Path(r.__file__).is_relative_to(pathlib.Path(sys.argv[1])), r.__file__; "
            "print(len(t), sorted(t['table'].unique()))")
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); " + code,
                           str(site)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "['I', 'II', 'III', 'IV']" in proc.stdout
