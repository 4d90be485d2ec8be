"""Which synthetic shifts can alignment undo, and does the default criterion see it?

    python benchmarks/demo_shifts.py [--weights resources/weights] [--shifts webcam outline night small]

The demo's source (clean shapes on white, ``layerfuse.synthetic``) against targets that differ from it
by one kind of shift each:

- ``webcam``: the embedded demo's target (clutter, coloured background, lighting, blur, noise, scale);
- ``outline``: the same shapes drawn as 7-pixel outlines on white;
- ``night``: the source's kind of shot under a dark green tint with sensor noise;
- ``small``: the shapes at half the size, anywhere in the frame, at any rotation.

For each: ImageNet global features (the workflow's pass, ``block-rms`` scaled), then the global feature
set's cells at the tables' centring (``domain``): no adaptation, TCA at 192/128/64 (the library's
defaults), and skada's CORAL, Subspace Alignment (64) and linear OT mapping; each cell's target
accuracy and the ``dev`` criterion's score (:mod:`layerfuse.select`), and which cell ``dev`` and
``entropy`` pick.  Target labels only measure.  About 30 s per shift on 2 cores.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

SHIFTS = ("webcam", "outline", "night", "small")
ADAPTERS = {"coral": {"method": "coral"}, "sa": {"method": "subspace_alignment", "n_components": 64},
            "ot": {"method": "linear_ot"}}
SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}


def render_target(shift: str, kind: str, rng, size: int):
    """One target image of ``kind`` under ``shift`` (``webcam``: the demo's own target)."""
    from PIL import Image, ImageFilter

    from layerfuse.synthetic import _random_colour, _render, _shape_mask

    if shift == "webcam":
        return _render(kind, rng, size, target=True)
    r = size * (rng.uniform(0.14, 0.19) if shift == "small" else rng.uniform(0.28, 0.38))
    if shift == "small":
        cx, cy = rng.uniform(r, size - r, 2)
        rot = rng.uniform(-math.pi, math.pi)
    else:
        cx, cy = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
        rot = rng.uniform(-0.3, 0.3)
    mask = _shape_mask(kind, size, cx, cy, r, rot)
    if shift == "outline":
        inner = np.asarray(mask.filter(ImageFilter.MinFilter(7))) > 0
        mask = Image.fromarray(((np.asarray(mask) > 0) & ~inner).astype(np.uint8) * 255)
    img = Image.new("RGB", (size, size), (255, 255, 255))
    img.paste(Image.new("RGB", (size, size), _random_colour(rng)), (0, 0), mask)
    if shift == "night":
        arr = np.asarray(img, np.float32) * np.array([0.35, 0.6, 0.35]) + rng.normal(0, 12, (size, size, 3))
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    return img


def images(shift: str | None, n_per_class: int, n_classes: int = 10, size: int = 224, seed: int = 0):
    """(uint8 NHWC images, labels) of the demo's source (``shift`` None) or of a shifted target."""
    from layerfuse.synthetic import SHAPES, _render

    out, labels = [], []
    for c, kind in enumerate(SHAPES[:n_classes]):
        rng = np.random.default_rng([seed, 0 if shift is None else 1, c])
        for _ in range(n_per_class):
            img = _render(kind, rng, size, target=False) if shift is None else render_target(shift, kind, rng, size)
            out.append(np.asarray(img.convert("RGB")))
            labels.append(c)
    return np.stack(out), np.array(labels)


def global_features(extractor, prepared, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([extractor(prepared(batch[i:i + 32]))["global"].float().numpy()
                               for i in range(0, len(batch), 32)])


def cells(xs, ys, xt) -> dict:
    """``{cell: (source, target)}`` of the global feature set's adapters, as the workflow fits them."""
    from layerfuse.adapt import fit_adapter
    from layerfuse.tca import TCA, stack_domains

    out = {"none": (xs, xt)}
    X, domain = stack_domains(xs, xt)
    z = TCA(192).fit_transform(X, sample_domain=domain)
    for d in (192, 128, 64):
        out[f"tca-{d}"] = (z[:len(xs), :d], z[len(xs):, :d])
    for key, spec in ADAPTERS.items():
        fitted = fit_adapter(xs, ys, xt, spec)
        out[key] = (fitted["source"], fitted["target"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=Path("resources/weights"),
                   help="folder with imagenet.pth and imagenet.json (a finished `make run` leaves them there)")
    p.add_argument("--shifts", nargs="+", choices=SHIFTS, default=list(SHIFTS))
    p.add_argument("--source-per-class", type=int, default=15)
    p.add_argument("--target-per-class", type=int, default=10)
    args = p.parse_args()

    from layerfuse.evaluate import center_domains, classify
    from layerfuse.extract import feature_extractor
    from layerfuse.fusion import fuse
    from layerfuse.select import criteria_scores
    from layerfuse.stages import _recorded_backbone

    model, spec, _ = _recorded_backbone(args.weights / "imagenet.pth", args.weights / "imagenet.json")
    extractor, prepared, precision, _ = feature_extractor(model, spec, {"flatten": "global"}, "auto")
    source, ys = images(None, args.source_per_class)
    gs = global_features(extractor, prepared, source)
    print(f"ImageNet global features ({precision}), centring domain; accuracy % / dev score per cell")
    for shift in args.shifts:
        t0 = time.perf_counter()
        target, yt = images(shift, args.target_per_class)
        xs, xt = fuse([(gs, global_features(extractor, prepared, target))], "block-rms")
        row = {}
        for name, (a, b) in cells(xs, ys, xt).items():
            cs, ct = center_domains(a, b, "domain")
            pred, _ = classify(cs, ys, ct, **SVM)
            crit = criteria_scores(cs, ys, ct, svm=SVM, criteria=["dev", "entropy"])
            row[name] = (100 * float(np.mean(pred == yt)), crit)
        picks = {c: max(row, key=lambda k: np.nan_to_num(row[k][1][c], nan=-np.inf)) for c in ("dev", "entropy")}
        cols = "  ".join(f"{k} {acc:.0f}/{crit['dev']:.2f}" for k, (acc, crit) in row.items())
        print(f"{shift:8s} {cols} | dev picks {picks['dev']} ({row[picks['dev']][0]:.0f}%), entropy picks "
              f"{picks['entropy']} ({row[picks['entropy']][0]:.0f}%); {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
