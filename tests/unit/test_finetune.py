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
    cfg = FinetuneConfig(trainable=trainable, epochs=15, batch_size=8, lr=0.05, seed=0, precision="fp32")
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
    cfg = FinetuneConfig(trainable="conv3", epochs=3, batch_size=8, lr=0.01, bn=bn, seed=1, precision="fp32")
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


@pytest.mark.parametrize("trainable", ["conv3", "fc"])
def test_tail_features_equal_the_merged_networks_global_features(tiny, trainable):
    """The source's fine-tuned global store, computed from the cache, is what a full pass would give."""
    from torchvision.models.feature_extraction import create_feature_extractor

    from layerfuse.backbones import preprocess
    from layerfuse.finetune import finetune_tail, merge_tail, tail_features

    model, images, labels = tiny
    cfg = FinetuneConfig(trainable=trainable, epochs=3, batch_size=8, lr=0.05, seed=0, precision="fp32")
    tail, cached, _ = finetune_tail(model, images, labels, SPEC, cfg, progress=False)
    merged = build_resnet50(SPEC)
    merged.fc = torch.nn.Linear(2048, 3)
    merged.load_state_dict(merge_tail(model, tail, trainable))
    ours = tail_features(tail, cached, batch_size=10)   # batches of 10: 24 images end on a partial batch
    with torch.no_grad():
        ref = create_feature_extractor(merged.eval(), {"flatten": "g"})(preprocess(images, SPEC))["g"]
    assert ours.shape == (24, 2048) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-5)
    if trainable == "conv3":   # training moved the features away from the base network's
        with torch.no_grad():
            base = create_feature_extractor(model.eval(), {"flatten": "g"})(preprocess(images, SPEC))["g"]
        assert not np.allclose(ours, base.numpy(), rtol=1e-3, atol=1e-4)


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


def test_mcc_loss_is_nought_for_sure_distinct_classes_and_most_for_uniform_predictions():
    from layerfuse.finetune import mcc_loss

    sure = torch.eye(3).repeat(4, 1) * 50                 # 12 rows, each sure of one class, every class used
    assert float(mcc_loss(sure)) < 1e-3
    assert float(mcc_loss(torch.zeros(12, 3))) == pytest.approx(2 / 3, abs=1e-6)   # C all 1/3: off-diagonal 2/3
    merged = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [5.0, 5.0, 0]] * 4)          # a row between two classes
    assert 1e-3 < float(mcc_loss(merged)) < 2 / 3
    logits = torch.zeros(6, 3, requires_grad=True)
    mcc_loss(logits + torch.randn(6, 3)).backward()
    assert logits.grad.abs().sum() > 0


def test_mcc_fine_tuning_sees_the_unlabelled_target(tiny):
    """``target_loss: mcc``: the target's class confusion falls over the epochs, the tail differs from a
    source-only fine-tuning, the run is deterministic, and the target's images are required."""
    model, images, labels = tiny
    target = np.clip(images.astype(int)[::-1] + 40, 0, 255).astype(np.uint8)     # brighter, no labels
    cfg = FinetuneConfig(epochs=12, batch_size=8, lr=0.05, precision="fp32", target_loss="mcc")
    sd, history = finetune(model, images, labels, SPEC, cfg, progress=False, target_images=target)
    assert "target_loss" in history[0] and history[-1]["target_loss"] < history[0]["target_loss"]
    again, _ = finetune(model, images, labels, SPEC, cfg, progress=False, target_images=target)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    plain, plain_history = finetune(model, images, labels, SPEC, FinetuneConfig(
        epochs=12, batch_size=8, lr=0.05, precision="fp32"), progress=False)
    assert "target_loss" not in plain_history[0] and not torch.equal(sd["fc.weight"], plain["fc.weight"])
    with pytest.raises(ValueError, match="target_loss 'mcc' needs the target's images"):
        finetune(model, images, labels, SPEC, cfg, progress=False)
    with pytest.raises(ValueError, match="the reference loop trains on the source only"):
        train_naive(model, images, labels, SPEC, cfg, 3)


def test_bad_options():
    with pytest.raises(ValueError, match="trainable"):
        FinetuneConfig(trainable="everything")
    with pytest.raises(ValueError, match="schedule"):
        FinetuneConfig(schedule="step")
    with pytest.raises(ValueError, match="precision"):
        FinetuneConfig(precision="fp16")
    with pytest.raises(ValueError, match="target_loss must be one of none, mcc"):
        FinetuneConfig(target_loss="dann")


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
    from layerfuse.config import node_is_frozen

    assert node_is_frozen(node, trainable) is frozen


def _bn_add_relu_mean_reference(z, identity, bn, positions):
    n = z.shape[0] // positions
    out = bn(z[:, :, None, None]).reshape(n, positions, -1)
    return torch.relu(out + identity.reshape(n, positions, -1)).mean(dim=1)


@pytest.mark.parametrize("mode", ["train", "eval", "cumulative", "frozen-stats"])
def test_fused_bn_add_relu_mean_equals_the_modules(mode):
    """The tail's fused BatchNorm + shortcut + ReLU + mean: outputs, gradients and running statistics."""
    import copy

    from layerfuse.finetune import bn_add_relu_mean

    torch.manual_seed(0)
    n, p, c = 6, 4, 8
    z0, identity, g = torch.randn(n * p, c) * 3 + 1, torch.randn(n * p, c), torch.randn(n, c)
    ref_bn = torch.nn.BatchNorm2d(c, momentum=None if mode == "cumulative" else 0.1,
                                  track_running_stats=mode != "frozen-stats")
    with torch.no_grad():
        ref_bn.weight.uniform_(0.5, 1.5)
        ref_bn.bias.normal_()
        if ref_bn.track_running_stats:
            ref_bn.running_mean.normal_()
            ref_bn.running_var.uniform_(0.5, 2)
    ref_bn.train(mode != "eval")
    results = []
    for fn, bn in ((_bn_add_relu_mean_reference, ref_bn), (bn_add_relu_mean, copy.deepcopy(ref_bn))):
        for _ in range(2):   # two steps: running statistics move twice
            z = z0.clone().requires_grad_()
            out = fn(z, identity, bn, p)
            (out * g).sum().backward()
        results.append([out, z.grad, bn.weight.grad, bn.bias.grad]
                       + ([bn.running_mean, bn.running_var, bn.num_batches_tracked] if bn.track_running_stats
                          else []))
    assert results[0][1].abs().sum() > 0   # the ReLU let gradient through
    for ours, ref in zip(results[1], results[0]):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
