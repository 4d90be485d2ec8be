"""Stages of rules/data.smk: the demo's images and each domain's image store."""
from __future__ import annotations

import logging

from ..images import prepare_domain
from ..synthetic import make_demo_dataset

log = logging.getLogger("layerfuse")


def make_demo_data(out_dir, params: dict, size: int) -> None:
    make_demo_dataset(out_dir, n_classes=params["n_classes"], n_source=params["n_source"],
                      n_target=params["n_target"], size=size, seed=params["seed"])


def prepare_images(domain: str, params: dict, manifest, store, memory_mb: float | None = None) -> dict:
    facts = prepare_domain(params["domains"], domain, size=params["image_size"], manifest_path=manifest,
                           store_path=store, keep=params["classes"], split=params.get("split"),
                           max_file_mb=params["max_file_mb"], memory_mb=memory_mb)
    log.info("%s: kept %d images, skipped %d; classes %s", domain, facts["kept"], facts["skipped"],
             facts["classes"])
    return facts
