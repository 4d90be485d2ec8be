"""ResNet-50 backbones: architecture variants, preprocessing and layer names.

Layer *keys* (``global``, ``block1`` …) are what configs and paths use; they
map to torchvision graph node names (``flatten``, ``layer1.0`` …), so dotted
node names never appear in file paths.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.models import resnet50

__all__ = [
    "DEFAULT_LAYERS",
    "BackboneSpec",
    "build_resnet50",
    "fold_batchnorm",
    "list_layers",
    "preprocess",
]

#: The paper's layers: the global descriptor after average pooling and the
#: outputs of the first three residual blocks (256 maps each).
DEFAULT_LAYERS = {
    "global": "flatten",
    "block1": "layer1.0",
    "block2": "layer1.1",
    "block3": "layer1.2",
}

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
TORCH_RGB_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_RGB_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build and feed a ResNet-50.

    Parameters
    ----------
    architecture : {"keras", "torchvision"}
        ``keras`` puts a stage's stride 2 in the first 1x1 conv (ResNet v1 as
        Keras and the paper); ``torchvision`` puts it in the 3x3 conv.
    preprocessing : {"caffe", "torch"}
        ``caffe``: BGR, 0-255, minus the ImageNet BGR mean (Keras weights).
        ``torch``: RGB in [0, 1], normalised by ImageNet mean/std.
    maxpool_pad : bool
        Pad 1 pixel before the first max-pool (56x56 block maps, Keras 2.2.4
        and torchvision) or not (55x55 maps, the paper's older Keras).
    """

    architecture: str = "keras"
    preprocessing: str = "caffe"
    maxpool_pad: bool = False

    def __post_init__(self):
        if self.architecture not in ("keras", "torchvision"):
            raise ValueError(f"architecture must be 'keras' or 'torchvision', got {self.architecture!r}")
        if self.preprocessing not in ("caffe", "torch"):
            raise ValueError(f"preprocessing must be 'caffe' or 'torch', got {self.preprocessing!r}")


def build_resnet50(spec: BackboneSpec, state_dict: dict | None = None, num_classes: int = 1000):
    """A torchvision ``resnet50`` in eval mode, adjusted to ``spec``, with ``state_dict`` loaded."""
    model = resnet50(weights=None, num_classes=num_classes)
    if spec.architecture == "keras":
        for stage in (model.layer2, model.layer3, model.layer4):
            first = stage[0]
            first.conv1.stride = (2, 2)
            first.conv2.stride = (1, 1)
    if not spec.maxpool_pad:
        model.maxpool.padding = 0
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"state_dict does not fit resnet50: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.eval()
    return model


def preprocess(images_uint8, spec: BackboneSpec):
    """NHWC uint8 RGB images (numpy or tensor) to the NCHW float tensor the weights expect."""
    x = torch.as_tensor(images_uint8).permute(0, 3, 1, 2).float()

    def channels(values):                      # on the images' device (a GPU's, where the pass runs there)
        return torch.from_numpy(values).view(1, 3, 1, 1).to(x.device)

    if spec.preprocessing == "caffe":
        x = x.flip(1) - channels(CAFFE_BGR_MEAN)
    else:
        x = (x / 255.0 - channels(TORCH_RGB_MEAN)) / channels(TORCH_RGB_STD)
    return x.contiguous(memory_format=torch.channels_last)


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 in hardware (not emulated, which is slower than fp32).

    CUDA: compute capability 8.0 or newer.  CPU: the ``amx_bf16`` or
    ``avx512_bf16`` flag in ``/proc/cpuinfo`` (Linux; elsewhere assumed absent).
    """
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto", name: str = "extract.device") -> str:
    """``auto`` -> ``cuda`` where torch sees a CUDA device, else ``cpu``; ``cpu`` as asked; ``cuda`` where there is
    one, else a one-line ``ValueError`` naming the setting ``name`` (checked in the job: a cluster's submitting
    host may have no GPU where its nodes do)."""
    if device not in DEVICES:
        raise ValueError(f"{name} must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} is cuda, but torch sees no CUDA device on this machine; "
                         "use auto (a GPU where there is one) or cpu")
    return device


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; ``fp32``/``bf16`` unchanged."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def fold_batchnorm(model, keep=()):
    """An inference copy of a ResNet-50 with every BatchNorm folded into the conv before it.

    ``conv(x) * s + t`` becomes one conv with scaled weights and a bias, computed in
    float64 and stored in the model's dtype, so extraction runs no BatchNorm ops (about a
    tenth of an eager bf16 pass on 2 cores). Results equal the unfolded network to float
    rounding (~1e-6 relative in fp32). A conv whose own output is requested (its name in
    ``keep``) stays unfolded, since folding changes what that node returns; the BatchNorm
    node's output is what the folded conv computes, so BatchNorm names may be requested.
    """
    model = copy.deepcopy(model).eval()
    pairs = [("", "conv1", "bn1")]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, stage)):
            prefix = f"{stage}.{i}."
            pairs += [(prefix, f"conv{j}", f"bn{j}") for j in (1, 2, 3)]
            if block.downsample is not None:
                pairs.append((prefix + "downsample.", "0", "1"))
    modules = dict(model.named_modules())
    for prefix, conv_name, bn_name in pairs:
        if prefix + conv_name in keep:
            continue
        parent = modules[prefix[:-1]] if prefix else model
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        folded = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                 conv.padding, conv.dilation, conv.groups, bias=True)
        with torch.no_grad():
            folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
            folded.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
        setattr(parent, conv_name, folded.to(conv.weight.dtype))
        setattr(parent, bn_name, torch.nn.Identity())
    return model


def list_layers(spec: BackboneSpec | None = None, image_size: int = 224) -> list[tuple[str, tuple]]:
    """``(node, output shape)`` for the nodes ``layers:`` can name, in graph order: the stem, every stage
    and residual block (``layer1`` … ``layer4.2``; a block's output is its last ReLU), the pooled
    ``flatten`` vector and ``fc``.  Built on the meta device: no weights, no arithmetic."""
    with torch.device("meta"):
        model = build_resnet50(spec or BackboneSpec())
        shapes = {}
        names = ["conv1", "bn1", "relu", "maxpool"] + [
            n for n, _ in model.named_modules() if n.startswith("layer") and n.count(".") <= 1] + ["avgpool", "fc"]
        modules = dict(model.named_modules())
        def record(name):
            def hook(module, args, output):          # returns None: the output is left as it is
                shapes[name] = tuple(output.shape[1:])
            return hook

        hooks = [modules[n].register_forward_hook(record(n)) for n in names]
        model(torch.empty(1, 3, image_size, image_size))
        for h in hooks:
            h.remove()
    out = [(n, shapes[n]) for n in names if n != "fc"]
    return out + [("flatten", (shapes["avgpool"][0],)), ("fc", shapes["fc"])]
