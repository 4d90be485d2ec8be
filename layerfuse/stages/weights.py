"""Stages of rules/weights.smk: the backbones' weights and the fine-tuned one (torch)."""
from __future__ import annotations


from .. import __version__
from ..config import backbone_spec
from ..weights import write_weights



def prepare_weights(backbone: dict, tarball, out_pth, out_json) -> None:
    """Write the backbone's state_dict (``.pth``) and a JSON record (sha256, architecture …)."""
    write_weights(backbone["weights"], tarball, out_pth, out_json, {**backbone_spec(backbone),
                                                                    "layerfuse_version": __version__})


def finetune_backbone(images, base_pth, base_json, params: dict, outputs, threads: int = 1,
                      global_layer: str = "global", target_images=None) -> list:
    """Fine-tune ``params['trainable']`` of the base backbone on the source images (and, with
    ``params['target_loss']``, the unlabelled images of the store ``target_images``).

    ``outputs`` has ``pth``, ``record``, ``curve``, ``plot`` and optionally
    ``source_global``: the fine-tuned network's ``flatten`` features of the
    source, computed from the cached activations (stored as layer ``global_layer``).
    """
    import torch  # torch, and the network's modules, load in the network's stages only (2 s)

    from ..finetune import finetune_and_record  # torch: as above

    torch.set_num_threads(int(threads))
    return finetune_and_record(images, base_pth, base_json, params, outputs, global_layer, target_images)
