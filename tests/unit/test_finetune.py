"""Fine-tuning the tail on cached activations: learns, touches only the tail, equals the naive loop."""
import numpy as np
import pytest
import torch

from layerfuse.backbones import BackboneSpec, build_resnet50
from layerfuse.finetune import FinetuneConfig, finetune, train_naive, write_history

SPEC = BackboneSpec("torchvision", "torch", True)


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised ResNet-50 and 24 separable 32x32 images of 3 classes."""
    torch.manual_seed(0)
    model = build_resnet50(SPEC)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    images = rng.integers(0, 40, (24, 32, 32, 3)).astype(np.uint8)
    for c in range(3):
        images[labels == c, :, :, c] += 200  # class = dominant colour channel
    return model, images, labels


@pytest.mark.parametrize("trainable", ["conv3", "fc"])
def test_training_reduces_loss_and_touches_only_the_tail(tiny, trainable):
    model, images, labels = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(trainable=trainable, epochs=15, batch_size=8, lr=0.05, seed=0)
    sd, history = finetune(model, images, labels, SPEC, cfg, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    trainable_prefixes = ("layer4.2.conv3.", "layer4.2.bn3.") if trainable == "conv3" else ()
    for k, v in before.items():
        if k.startswith("fc."):
            continue
        if k.startswith(trainable_prefixes):
            continue
        assert torch.equal(sd[k], v), f"frozen parameter {k} changed"
    if trainable == "conv3":
        assert not torch.equal(sd["layer4.2.conv3.weight"], before["layer4.2.conv3.weight"])
    assert sd["fc.weight"].shape == (3, 2048)
    # the model itself is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("bn", ["train", "frozen"])
def test_cached_equals_naive(tiny, bn):
    """The cached path and a full forward/backward loop give the same weights."""
    model, images, labels = tiny
    cfg = FinetuneConfig(trainable="conv3", epochs=3, batch_size=8, lr=0.01, bn=bn, seed=1)
    sd_cached, h_cached = finetune(model, images, labels, SPEC, cfg, progress=False)
    naive, h_naive = train_naive(model, images, labels, SPEC, cfg, num_classes=3)
    # the same maths through other kernels (position-major matrix product vs NCHW convolution):
    # float32 rounding, amplified by 3 epochs of SGD with momentum, is all that differs
    for k in ("layer4.2.conv3.weight", "layer4.2.bn3.weight", "layer4.2.bn3.running_mean", "fc.weight"):
        torch.testing.assert_close(sd_cached[k], naive.state_dict()[k], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose([h["loss"] for h in h_cached], [h["loss"] for h in h_naive], rtol=1e-3)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_cached_tail_computes_the_full_networks_logits(tiny, bn_mode):
    """One forward pass: the tail on cached activations gives the full network's logits (tight)."""
    import copy

    from layerfuse.backbones import preprocess
    from layerfuse.finetune import cache_activations, make_tail

    model, images, _ = tiny
    cached = cache_activations(model.eval(), images, SPEC, "conv3")
    tail = make_tail(model, "conv3", 3, seed=0)
    full = copy.deepcopy(model).eval()
    full.fc = copy.deepcopy(tail.fc)
    tail.train(bn_mode == "train")
    full.layer4[2].bn3.train(bn_mode == "train")
    with torch.no_grad():
        ours = tail(*[torch.from_numpy(c) for c in cached])
        ref = full(preprocess(images, SPEC))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_deterministic(tiny):
    model, images, labels = tiny
    cfg = FinetuneConfig(epochs=2, batch_size=8, seed=3)
    a, _ = finetune(model, images, labels, SPEC, cfg, progress=False)
    b, _ = finetune(model, images, labels, SPEC, cfg, progress=False)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_bf16_training_learns(tiny):
    """bf16 autocast (the fast option on AMX CPUs) trains too and keeps the frozen part intact."""
    model, images, labels = tiny
    cfg = FinetuneConfig(epochs=15, batch_size=8, lr=0.05, precision="bf16")
    sd, history = finetune(model, images, labels, SPEC, cfg, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert torch.equal(sd["layer1.0.conv1.weight"], model.state_dict()["layer1.0.conv1.weight"])


def test_bad_options():
    with pytest.raises(ValueError, match="trainable"):
        FinetuneConfig(trainable="everything")
    with pytest.raises(ValueError, match="schedule"):
        FinetuneConfig(schedule="step")


def test_history_files(tmp_path):
    write_history([{"epoch": 1, "loss": 1.0, "source_accuracy": 0.5, "lr": 0.1},
                   {"epoch": 2, "loss": 0.5, "source_accuracy": 0.8, "lr": 0.1}],
                  tmp_path / "c.csv", tmp_path / "c.png")
    assert (tmp_path / "c.csv").read_text().startswith("epoch,loss,source_accuracy,lr")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("node,trainable,frozen", [
    ("layer1.0", "conv3", True), ("layer4.2.relu_1", "conv3", True), ("layer4.2.conv3", "conv3", False),
    ("flatten", "fc", False), ("layer4.2.relu_2", "fc", True), ("layer4.1.relu_2", "block", True),
    ("layer4.2.conv1", "block", False), ("layer3.5.relu_2", "stage", True), ("layer4.0.conv1", "stage", False),
])
def test_node_is_frozen(node, trainable, frozen):
    """Local layers before the tail are shared with the base backbone instead of re-extracted."""
    from layerfuse.finetune import node_is_frozen

    assert node_is_frozen(node, trainable) is frozen
