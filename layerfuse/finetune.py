"""Fine-tune the tail of a ResNet-50 on the source domain, on cached activations.

The paper fine-tunes "only the last seven layers" of Keras' ResNet-50.  In
Keras' layer list those are ``res5c_branch2c``, ``bn5c_branch2c``, ``add_16``,
``activation_49``, ``avg_pool``, ``fc1000`` and the ReLU before them
(``activation_48``); the ones with weights are the last bottleneck's third
convolution and BatchNorm and the (replaced) prediction layer.  In torchvision
terms: ``layer4.2.conv3``, ``layer4.2.bn3`` and ``fc`` — ``trainable="conv3"``.

Everything before the trainable tail is frozen and there is no augmentation,
so its output for each source image never changes: it is computed once
(``cache_activations``) and the tail trains on the cache, which makes 100
epochs a matter of seconds per epoch on a CPU.  ``trainable`` can also be
``"fc"`` (linear probe), ``"block"`` (all of ``layer4.2``) or ``"stage"``
(all of ``layer4``).

BatchNorm inside the tail is in training mode by default (batch statistics,
running averages updated), as in Keras; ``bn="frozen"`` keeps it in eval mode.

``target_loss="mcc"`` lets the tail see the unlabelled target too: each step
adds a target batch (drawn in seeded order, the target cached like the
source) to the source batch in one forward pass (BatchNorm sees both domains)
and minimises the source's cross-entropy plus ``target_weight`` times the
target's minimum class confusion (MCC: Jin et al., ECCV 2020): the
temperature-scaled predictions' class-correlation matrix, weighted towards
confident rows and normalised per class, off its diagonal.  No target label
is read.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import json
import logging
from dataclasses import dataclass

import h5py
import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from tqdm import tqdm

from . import __version__
from .backbones import preprocess, resolve_precision
from .extract import feature_store_attrs, load_recorded_backbone
from .h5io import atomic_path, open_feature_store, write_meta, write_text_atomic
from .memory import reuse_large_allocations
from .report import pyplot
from .weights import sha256_file

__all__ = ["FinetuneConfig", "TRAINABLE", "TARGET_LOSSES", "cache_activations", "make_tail", "mcc_loss",
           "train_tail", "train_naive", "merge_tail", "tail_features", "finetune_tail", "finetune",
           "finetune_and_record"]

log = logging.getLogger("layerfuse.finetune")

#: trainable tail -> (nodes whose outputs are cached, parameter-name prefixes that train)
TRAINABLE = {
    "fc": (["flatten"], ["fc."]),
    "conv3": (["layer4.2.relu_1", "layer4.1.relu_2"], ["layer4.2.conv3.", "layer4.2.bn3.", "fc."]),
    "block": (["layer4.1.relu_2"], ["layer4.2.", "fc."]),
    "stage": (["layer3.5.relu_2"], ["layer4.", "fc."]),
}


TARGET_LOSSES = ("none", "mcc")


@dataclass
class FinetuneConfig:
    """The paper's setup by default: SGD, lr 0.1, momentum 0.9, weight decay 1e-4, batch 256, 100 epochs."""

    trainable: str = "conv3"
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"       # constant | cosine
    bn: str = "train"                # train | frozen
    precision: str = "auto"          # auto (bf16 where native) | fp32 | bf16: frozen pass and tail training
    seed: int = 0
    target_loss: str = "none"        # none (the paper: source only) | mcc (unlabelled target batches too)
    target_weight: float = 1.0       # the target loss's weight beside the source's cross-entropy
    mcc_temperature: float = 2.5     # MCC's probability temperature (the MCC paper's)

    def __post_init__(self):
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {sorted(TRAINABLE)}, got {self.trainable!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.bn not in ("train", "frozen"):
            raise ValueError(f"bn must be 'train' or 'frozen', got {self.bn!r}")
        if self.target_loss not in TARGET_LOSSES:
            raise ValueError(f"target_loss must be one of {', '.join(TARGET_LOSSES)}, got {self.target_loss!r}")


def bn_add_relu_mean(z, identity, bn, positions: int):
    """``relu(bn(z) + identity)`` averaged over each image's ``positions`` rows, with a fused backward.

    ``z`` and ``identity`` are ``(images * positions, channels)``; ``bn`` is a
    BatchNorm module (batch statistics in training mode, running ones in eval
    mode; running statistics updated as the module does).  The same maths as
    the module calls, through ATen's own batch-norm kernels, but the add, ReLU
    and mean are done in place and their backward is one pass (autograd keeps
    and revisits four ``rows x channels`` intermediates for them).
    """
    return _bn_add_relu_mean_function().apply(z, identity, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                bn.training or not bn.track_running_stats, _bn_momentum(bn), bn.eps, positions)


def _bn_momentum(bn) -> float:
    """The running-average factor of this step (``momentum=None``: cumulative average, as nn.BatchNorm)."""
    if not (bn.training and bn.track_running_stats):
        return 0.0
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


@functools.cache
def _bn_add_relu_mean_function():
    """The autograd Function, built on first use (importing this module must not import torch)."""
    class BnAddReluMean(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, identity, weight, bias, running_mean, running_var, batch_stats, momentum, eps,
                    positions):
            a, mean, invstd = torch.native_batch_norm(z, weight, bias, running_mean, running_var, batch_stats,
                                                      momentum, eps)
            a.add_(identity).relu_()
            ctx.save_for_backward(z, a, weight, running_mean, running_var, mean, invstd)
            ctx.batch_stats, ctx.eps, ctx.positions = batch_stats, eps, positions
            return a.view(-1, positions, a.shape[1]).mean(dim=1)

        @staticmethod
        def backward(ctx, grad_out):
            z, a, weight, running_mean, running_var, mean, invstd = ctx.saved_tensors
            p = ctx.positions
            # d mean / d a, through the ReLU: one pass over a
            grad_a = torch.ops.aten.threshold_backward(
                (grad_out / p)[:, None, :].expand(-1, p, -1), a.view(-1, p, a.shape[1]), 0).reshape(a.shape)
            grad_z, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
                grad_a, z, weight, running_mean, running_var, mean, invstd, ctx.batch_stats, ctx.eps,
                [True, ctx.needs_input_grad[2], ctx.needs_input_grad[3]])
            grad_identity = grad_a if ctx.needs_input_grad[1] else None
            return grad_z, grad_identity, grad_weight, grad_bias, None, None, None, None, None, None

    return BnAddReluMean


def make_tail(model, trainable: str, num_classes: int, seed: int = 0):
    """A trainable copy of the model's tail with a fresh ``num_classes`` prediction layer."""
    torch.manual_seed(seed)
    fc = nn.Linear(model.fc.in_features, num_classes)
    if trainable == "fc":

        class LinearTail(nn.Module):
            """The new prediction layer alone, on the cached 2048-d pooled features."""

            def __init__(self):
                super().__init__()
                self.fc = fc

            def features(self, x):
                return x

            def forward(self, x):
                return self.fc(x)

        return LinearTail()

    if trainable == "conv3":
        block = model.layer4[2]

        class Conv3Tail(nn.Module):
            """conv3 (1x1) + bn3 + shortcut + ReLU + average pool + fc on position-major activations.

            Inputs are ``(n, positions, channels)``: a 1x1 convolution is then one matrix
            product over all positions and BatchNorm a per-column normalisation, faster than
            the NCHW convolution (same maths; weights are stored as the convolution's, see
            ``merge_tail``).  BatchNorm, shortcut, ReLU and mean then run fused
            (``bn_add_relu_mean``); the timings are in docs/benchmarks.md.
            """

            def __init__(self):
                super().__init__()
                self.conv3 = nn.Linear(block.conv3.in_channels, block.conv3.out_channels, bias=False)
                with torch.no_grad():
                    self.conv3.weight.copy_(block.conv3.weight.flatten(1))
                self.bn3 = copy.deepcopy(block.bn3)
                self.fc = fc

            def features(self, h, identity):
                """The 2048-d pooled vector (torchvision's ``flatten`` node) the fc sees."""
                n, p, _ = h.shape
                z = self.conv3(h.reshape(n * p, -1)).float()   # bf16 under autocast; BatchNorm in float32
                return bn_add_relu_mean(z, identity.reshape(n * p, -1), self.bn3, p)

            def forward(self, h, identity):
                return self.fc(self.features(h, identity))

        return Conv3Tail()

    body = copy.deepcopy(model.layer4[2] if trainable == "block" else model.layer4)

    class BodyTail(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body
            self.fc = fc

        def features(self, x):
            return self.body(x).mean(dim=(2, 3))

        def forward(self, x):
            return self.fc(self.features(x))

    return BodyTail()


def cache_activations(model, images_uint8, spec, trainable: str, batch_size: int = 32,
                      precision: str = "fp32") -> list[np.ndarray]:
    """Outputs of the frozen part for every image: the tail's inputs (float32 arrays; for ``conv3``
    position-major, ``(n, h*w, channels)``).  ``precision="bf16"`` runs the pass under bf16
    autocast (as extraction does where the CPU computes bf16 natively)."""
    nodes = TRAINABLE[trainable][0]
    model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)   # as extraction runs it
    fx = create_feature_extractor(model, return_nodes={n: n for n in nodes})
    n = len(images_uint8)
    cached: list[np.ndarray] = []   # filled batch by batch: peak memory is the cache itself, not 3 copies
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with reuse_large_allocations(), torch.inference_mode(), autocast:
        for lo in tqdm(range(0, n, batch_size), desc="cache", unit="batch", mininterval=2.0):
            out = fx(preprocess(images_uint8[lo:lo + batch_size], spec))
            for i, k in enumerate(nodes):
                t = out[k].float()
                if trainable == "conv3":   # (n, positions, channels): what Conv3Tail multiplies
                    t = t.flatten(2).transpose(1, 2)
                if not lo:
                    cached.append(np.empty((n,) + tuple(t.shape[1:]), np.float32))
                cached[i][lo:lo + len(t)] = t.numpy()
    return cached


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion of a batch of target logits (Jin et al., ECCV 2020): with ``p`` the
    predictions at ``temperature``, rows weighted by ``1 + exp(-entropy)`` (normalised to the batch size),
    ``C = pᵀ diag(w) p`` normalised per row; the loss is ``C``'s off-diagonal mass over the classes."""
    n, classes = logits.shape
    p = torch.softmax(logits / temperature, dim=1)
    entropy = -(p * torch.log(p + 1e-5)).sum(dim=1)
    w = 1 + torch.exp(-entropy)
    w = (n * w / w.sum()).detach()
    confusion = (p * w[:, None]).T @ p
    # a class no row gives any probability (underflow) has an empty row: it adds nothing, and no NaN
    confusion = confusion / confusion.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (confusion.sum() - torch.trace(confusion)) / classes


def _train_modes(root, trainable_modules, bn: str):
    """A callable putting ``root`` in eval and the trainable modules in train mode (BN per ``bn``)."""
    def set_modes():
        root.eval()
        for m in trainable_modules():
            m.train()
            if bn == "frozen" and isinstance(m, nn.BatchNorm2d):
                m.eval()

    return set_modes


def _lr_at(cfg: FinetuneConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + np.cos(np.pi * epoch / max(cfg.epochs, 1)))
    return cfg.lr


def _train(forward_batch, params, set_modes, n, labels, cfg: FinetuneConfig, progress: bool = True,
           n_target: int = 0):
    """The loop shared by the cached and the naive path: seeded shuffles, SGD, per-epoch history.

    ``forward_batch(idx, target_idx)`` gives the logits of source rows ``idx`` followed by target rows
    ``target_idx`` (none where ``cfg.target_loss`` is ``none``); with ``n_target`` target rows each step
    takes as many as its source batch from a seeded permutation of them, cycled."""
    bf16 = resolve_precision(cfg.precision) == "bf16"
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    y = torch.as_tensor(labels, dtype=torch.long)
    history = []
    target = cfg.target_loss != "none" and n_target > 0
    target_order, target_at = torch.zeros(0, dtype=torch.long), 0
    none = torch.zeros(0, dtype=torch.long)
    bar = tqdm(range(cfg.epochs), desc="finetune", unit="epoch", disable=not progress, mininterval=1.0)
    for epoch in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, epoch)
        set_modes()
        order = torch.randperm(n, generator=gen)
        total, correct, seen, target_total = 0.0, 0, 0, 0.0
        for lo in range(0, n, cfg.batch_size):
            idx = order[lo:lo + cfg.batch_size]
            tidx = none
            if target:
                while len(tidx) < len(idx):            # the next rows of the target's order, reshuffled when used up
                    if target_at >= len(target_order):
                        target_order, target_at = torch.randperm(n_target, generator=gen), 0
                    take = target_order[target_at:target_at + len(idx) - len(tidx)]
                    tidx, target_at = torch.cat([tidx, take]), target_at + len(take)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                all_logits = forward_batch(idx, tidx)
            logits = all_logits[:len(idx)]
            loss = torch.nn.functional.cross_entropy(logits.float(), y[idx])
            if target:
                target_term = mcc_loss(all_logits[len(idx):].float(), cfg.mcc_temperature)
                loss = loss + cfg.target_weight * target_term
                target_total += float(target_term.detach()) * len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += len(idx)
        row = {"epoch": epoch + 1, "loss": total / seen, "source_accuracy": correct / seen,
               "lr": opt.param_groups[0]["lr"]}
        if target:
            row["target_loss"] = target_total / seen
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['source_accuracy']:.3f}")
    return history


def train_tail(tail, cached: list[np.ndarray], labels, cfg: FinetuneConfig, progress: bool = True,
               target_cached: list[np.ndarray] | None = None):
    """Train ``tail`` on cached frozen-part activations (and, with ``cfg.target_loss``, the target's
    ``target_cached``, unlabelled); returns the per-epoch history."""
    tensors = [torch.from_numpy(np.ascontiguousarray(c)) for c in cached]
    targets = [torch.from_numpy(np.ascontiguousarray(c)) for c in target_cached or []]

    def forward_batch(idx, tidx):
        if not len(tidx):
            return tail(*[t[idx] for t in tensors])
        return tail(*[torch.cat([s[idx], t[tidx]]) for s, t in zip(tensors, targets)])

    with reuse_large_allocations():   # each step's ~100 MB intermediates reuse the last step's memory
        history = _train(forward_batch, list(tail.parameters()), _train_modes(tail, tail.modules, cfg.bn),
                         len(labels), labels, cfg, progress, n_target=len(targets[0]) if targets else 0)
    tail.eval()
    return history


def train_naive(model, images_uint8, labels, spec, cfg: FinetuneConfig, num_classes: int,
                progress: bool = False):
    """Reference loop: full forward/backward through the whole network each batch (frozen prefix).

    Used by the tests (equality with the cached path) and the benchmark (its speed); source only.
    """
    if cfg.target_loss != "none":
        raise ValueError(f"the reference loop trains on the source only; target_loss {cfg.target_loss!r} "
                         "needs finetune()")
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)   # as the cached path's frozen pass
    torch.manual_seed(cfg.seed)
    model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    prefixes = TRAINABLE[cfg.trainable][1]
    trainable = [p for name, p in model.named_parameters() if name.startswith(tuple(prefixes))]
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(tuple(prefixes)))
    x = preprocess(images_uint8, spec)
    modules = lambda: [m for name, m in model.named_modules()  # noqa: E731
                       if name and (name + ".").startswith(tuple(prefixes))]
    history = _train(lambda idx, _: model(x[idx]), trainable, _train_modes(model, modules, cfg.bn), len(labels),
                     labels, cfg, progress)
    model.eval()
    return model, history


def merge_tail(model, tail, trainable: str) -> dict:
    """The full state_dict: the frozen model with the trained tail and the new prediction layer."""
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    tsd = tail.state_dict()
    if trainable == "fc":
        mapping = {"fc.": "fc."}
    elif trainable == "conv3":
        mapping = {"conv3.": "layer4.2.conv3.", "bn3.": "layer4.2.bn3.", "fc.": "fc."}
    elif trainable == "block":
        mapping = {"body.": "layer4.2.", "fc.": "fc."}
    else:
        mapping = {"body.": "layer4.", "fc.": "fc."}
    for k, v in tsd.items():
        for src, dst in mapping.items():
            if k.startswith(src):
                sd[dst + k[len(src):]] = v.detach().clone().reshape(sd.get(dst + k[len(src):], v).shape)
                break
    return sd


def write_history(history: list[dict], csv_path, png_path=None) -> None:
    """Training curve as CSV (and PNG)."""
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, ["epoch", "loss", "source_accuracy", "lr"]
                               + (["target_loss"] if history and "target_loss" in history[0] else []))
            w.writeheader()
            w.writerows(history)
    if png_path is None:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["loss"] for h in history], label="loss")
    if history and "target_loss" in history[0]:
        ax.plot(ep, [h["target_loss"] for h in history], color="C2", label="target loss (MCC)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (source cross-entropy + target's)")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["source_accuracy"] for h in history], color="C1", label="source accuracy")
    ax2.set_ylabel("source accuracy")
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def tail_features(tail, cached: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """The trained network's 2048-d global features (``flatten``) of the cached images, float32.

    Everything before the tail is frozen, so these are the features a full
    forward pass of the merged fine-tuned network would give (same maths,
    other kernels: equal to float32 rounding): the source's global store
    needs no second pass over the images.  ``tail`` is put in eval mode.
    """
    tail.eval()
    tensors = [torch.from_numpy(np.ascontiguousarray(c)) for c in cached]
    n = len(tensors[0])
    with torch.inference_mode():
        parts = [tail.features(*[t[lo:lo + batch_size] for t in tensors]).float().numpy()
                 for lo in range(0, n, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, tail.fc.in_features), np.float32)


def finetune_tail(model, images_uint8, labels, spec, cfg: FinetuneConfig, progress: bool = True,
                  target_images=None):
    """Cache the frozen part and train the tail on it; returns (tail, cached activations, history).
    ``target_images`` (uint8, unlabelled): the target's, for ``cfg.target_loss``; required by it.

    ``cfg.precision="auto"`` resolves to bf16 where the CPU computes it natively (as extraction's
    ``precision: auto``), for the frozen pass and the tail's training.
    """
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision))
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    num_classes = int(np.max(labels)) + 1
    cached = cache_activations(model, images_uint8, spec, cfg.trainable, precision=cfg.precision)
    target_cached = None
    if cfg.target_loss != "none":
        if target_images is None or not len(target_images):
            raise ValueError(f"target_loss {cfg.target_loss!r} needs the target's images")
        target_cached = cache_activations(model, target_images, spec, cfg.trainable, precision=cfg.precision)
    tail = make_tail(model, cfg.trainable, num_classes, seed=cfg.seed)
    history = train_tail(tail, cached, labels, cfg, progress, target_cached)
    return tail, cached, history


def finetune(model, images_uint8, labels, spec, cfg: FinetuneConfig, progress: bool = True, target_images=None):
    """Cache the frozen part, train the tail (on the target's images too, for ``cfg.target_loss``); returns
    (state_dict, history)."""
    tail, _, history = finetune_tail(model, images_uint8, labels, spec, cfg, progress, target_images)
    return merge_tail(model, tail, cfg.trainable), history


def finetune_and_record(images, base_pth, base_json, params: dict, outputs, global_layer: str = "global",
                        target_images=None):
    """:func:`layerfuse.stages.finetune_backbone`'s work: load the base network (weights ``base_pth``, JSON
    record ``base_json``), train the tail on the image store ``images`` (and, for ``target_loss``, the
    unlabelled images of the store ``target_images``), write ``outputs``; the history."""
    model, spec, record = load_recorded_backbone(base_pth, base_json)
    with h5py.File(images, "r") as f:
        x, y = f["images"][()], f["labels"][()]
        image_ids, image_list_sha256 = f["image_ids"].asstr()[()], f.attrs.get("image_list_sha256", "")
    cfg = FinetuneConfig(**{k: v for k, v in params.items() if k != "base"})
    xt = None
    if target_images is not None and cfg.target_loss != "none":
        with h5py.File(target_images, "r") as f:
            xt = f["images"][()]
    tail, cached, history = finetune_tail(model, x, y, spec, cfg, target_images=xt)
    with atomic_path(outputs.pth) as tmp:
        torch.save(merge_tail(model, tail, cfg.trainable), tmp)
    out = {**{k: record[k] for k in ("architecture", "preprocessing", "maxpool_pad")},
           "weights": "finetune", "base_sha256": record["sha256"], "finetune": params,
           "sha256": sha256_file(outputs.pth), "final_loss": history[-1]["loss"],
           "final_source_accuracy": history[-1]["source_accuracy"],
           "precision_used": resolve_precision(cfg.precision), "layerfuse_version": __version__}
    if "source_global" in outputs.keys():
        # the source's global store from the cache: no second pass over the images
        features = tail_features(tail, cached)
        with atomic_path(outputs.source_global) as tmp:
            f, dset = open_feature_store(tmp, features.shape, "float32", None)
            with f:
                dset[...] = features
                write_meta(f, y, image_ids, feature_store_attrs(
                    global_layer, "flatten", spec, out["sha256"], out["precision_used"], image_list_sha256,
                    x.shape[1], compiled=False, computed_from="fine-tuning cache"))
    write_text_atomic(outputs.record, json.dumps(out, indent=2) + "\n")
    write_history(history, outputs.curve, outputs.plot)
    log.info("fine-tuned %s: final loss %.4f, source accuracy %.3f", params["trainable"], history[-1]["loss"],
             history[-1]["source_accuracy"])
    return history
