"""Which synthetic shifts can alignment undo, and does the default criterion see it?

    python benchmarks/demo_shifts.py [--weights resources/weights] [--family shapes|textures|office] [--shifts ...]
                                     [--seed N]

``--family shapes`` (the default): the demo's source (clean shapes in random colours on white,
``layerfuse.synthetic``) against targets that differ from it by one kind of shift each:

- ``webcam``: the embedded demo's target (clutter, coloured background, lighting, blur, noise, scale);
- ``outline``: the same shapes drawn as 7-pixel outlines on white;
- ``night``: the source's kind of shot under a dark green tint with sensor noise;
- ``small``: the shapes at half the size, anywhere in the frame, at any rotation.

``--family textures``: ten periodic patterns (stripes three ways, checks, dots, grid, rings, waves,
zigzag, blobs) at a random period and phase, so that the class is what varies most in ImageNet's
features; the source draws them dark on light grey, the targets

- ``colour``: in two random colours, nothing else changed;
- ``webcam``: in colour, under a colour cast, at webcam resolution, blurred, with sensor noise;
- ``photo``: in colour, rotated, under a lighting gradient, with noise.

``--family office``: real photos at the demo's size, a seeded draw of 15 Amazon images per class against
10 Webcam images per class from ``../shared/data/office_caltech10`` (``--seed`` draws another), to tell
the drawn images from the demo's size as the reason TCA does not pay on the demo.

For each: ImageNet global features (the workflow's pass, ``block-rms`` scaled), then the global feature
set's cells at the tables' centring (``domain``): no adaptation, TCA at 192/128/64 (the library's
defaults), JDA with a linear kernel (64), and skada's CORAL, Subspace Alignment (64) and linear OT
mapping; each cell's target accuracy and the ``dev`` criterion's score (:mod:`layerfuse.select`), and
which cell ``dev`` and ``entropy`` pick.  Target labels only measure.  About 30 s per shift on 2 cores.
"""
from __future__ import annotations

import argparse
import math
import zlib
import time
from pathlib import Path

import numpy as np

SHIFTS = {"shapes": ("webcam", "outline", "night", "small"), "textures": ("colour", "webcam", "photo"),
          "office": ("webcam",)}
OFFICE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "office_caltech10"
TEXTURES = ("hstripes", "vstripes", "diagonal", "checks", "dots", "grid", "rings", "waves", "zigzag", "blobs")
ADAPTERS = {"jda-linear": {"method": "jda", "n_components": 64, "kernel": "linear"}, "coral": {"method": "coral"},
            "sa": {"method": "subspace_alignment", "n_components": 64}, "ot": {"method": "linear_ot"}}
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


def render_texture(shift: str | None, kind: str, rng, size: int):
    """One image of the pattern ``kind``: dark on light grey (the source, ``shift`` None) or shifted."""
    from PIL import Image, ImageFilter

    from layerfuse.synthetic import _random_colour

    yy, xx = np.mgrid[0:size, 0:size] / size * 2 * np.pi * rng.uniform(6, 12)     # 6-12 periods a side
    phase = rng.uniform(0, 2 * np.pi)
    wave = {"hstripes": lambda: np.sin(yy + phase), "vstripes": lambda: np.sin(xx + phase),
            "diagonal": lambda: np.sin((xx + yy) / np.sqrt(2) + phase),
            "checks": lambda: np.sin(xx + phase) * np.sin(yy + phase),
            "dots": lambda: np.sin(xx + phase) * np.sin(yy + phase) - 0.5,
            "grid": lambda: 0.2 - np.minimum(abs(np.sin(xx / 2 + phase)), abs(np.sin(yy / 2 + phase))),
            "rings": lambda: np.sin(np.hypot(xx - xx.mean(), yy - yy.mean()) + phase),
            "waves": lambda: np.sin(yy + 1.5 * np.sin(xx / 2) + phase),
            "zigzag": lambda: np.sin(yy + 4 * abs(xx / np.pi % 2 - 1) + phase)}
    if kind == "blobs":
        noise = Image.fromarray(rng.normal(size=(12, 12)).astype(np.float32))
        mask = np.asarray(noise.resize((size, size), Image.BICUBIC)) > 0
    else:
        mask = wave[kind]() > 0
    if shift is None:
        ink, paper = np.full(3, rng.uniform(0, 60)), np.full(3, rng.uniform(195, 255))
    else:
        ink, paper = np.array(_random_colour(rng)), np.array(_random_colour(rng))
    arr = np.where(mask[..., None], ink, paper).astype(np.float32)
    if shift == "webcam":
        arr = arr * rng.uniform(0.55, 1.35) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-25, 25)
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        low = int(size * rng.uniform(0.4, 0.7))
        img = img.resize((low, low), Image.BILINEAR).resize((size, size), Image.BILINEAR)
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(4, 16), (size, size, 3))
    elif shift == "photo":
        img = Image.fromarray(arr.astype(np.uint8)).rotate(rng.uniform(-30, 30), resample=Image.BILINEAR,
                                                           fillcolor=(128, 128, 128))
        light = np.linspace(rng.uniform(0.4, 0.8), rng.uniform(1.0, 1.3), size)[None, :, None]
        arr = np.asarray(img, np.float32) * light * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def office_images(domain: str, n_per_class: int, size: int, seed: int):
    """A seeded draw of ``n_per_class`` images of each Office-Caltech10 class of ``domain``, decoded as the
    workflow decodes them."""
    from layerfuse.images import decode_image

    folders = sorted(d for d in (OFFICE / domain).iterdir() if d.is_dir())
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])      # a draw of its own per domain
    out, labels = [], []
    for c, folder in enumerate(folders):
        files = sorted(folder.iterdir())
        for i in np.sort(rng.choice(len(files), min(n_per_class, len(files)), replace=False)):
            out.append(decode_image(files[i].read_bytes(), size))
            labels.append(c)
    return np.stack(out), np.array(labels)


def images(shift: str | None, n_per_class: int, family: str = "shapes", n_classes: int = 10, size: int = 224,
           seed: int = 0):
    """(uint8 NHWC images, labels) of a family's source (``shift`` None) or of a shifted target."""
    from layerfuse.synthetic import SHAPES, _render

    if family == "office":
        return office_images("amazon" if shift is None else shift, n_per_class, size, seed)

    def draw(kind, rng):
        if family == "textures":
            return render_texture(shift, kind, rng, size)
        return _render(kind, rng, size, target=False) if shift is None else render_target(shift, kind, rng, size)

    out, labels = [], []
    for c, kind in enumerate((TEXTURES if family == "textures" else SHAPES)[:n_classes]):
        rng = np.random.default_rng([seed, 0 if shift is None else 1, c])
        for _ in range(n_per_class):
            out.append(np.asarray(draw(kind, rng).convert("RGB")))
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
        fitted = fit_adapter(np.vstack([xs, xt]), len(xs), ys, spec)
        out[key] = (fitted["source"], fitted["target"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=Path("resources/weights"),
                   help="folder with imagenet.pth and imagenet.json (a finished `make run` leaves them there)")
    p.add_argument("--family", choices=list(SHIFTS), default="shapes")
    p.add_argument("--shifts", nargs="+", help="of the family's (default: all): shapes "
                   f"{', '.join(SHIFTS['shapes'])}; textures {', '.join(SHIFTS['textures'])}; office webcam")
    p.add_argument("--seed", type=int, default=0, help="the images' seed (office: which photos are drawn)")
    p.add_argument("--source-per-class", type=int, default=15)
    p.add_argument("--target-per-class", type=int, default=10)
    args = p.parse_args()
    shifts = args.shifts or SHIFTS[args.family]
    if set(shifts) - set(SHIFTS[args.family]):
        p.error(f"--shifts: the {args.family} family has {', '.join(SHIFTS[args.family])}")
    if args.family == "office" and not OFFICE.is_dir():
        p.error(f"--family office reads {OFFICE}, which is not here")

    from layerfuse.evaluate import center_domains, classify
    from layerfuse.extract import feature_extractor
    from layerfuse.fusion import fuse
    from layerfuse.select import criteria_scores
    from layerfuse.extract import load_recorded_backbone

    model, spec, _ = load_recorded_backbone(args.weights / "imagenet.pth", args.weights / "imagenet.json")
    extractor, prepared, precision, _ = feature_extractor(model, spec, {"flatten": "global"}, "auto")
    source, ys = images(None, args.source_per_class, args.family, seed=args.seed)
    gs = global_features(extractor, prepared, source)
    print(f"ImageNet global features ({precision}), centring domain; accuracy % / dev score per cell")
    for shift in shifts:
        t0 = time.perf_counter()
        target, yt = images(shift, args.target_per_class, args.family, seed=args.seed)
        xs, xt = fuse([(gs, global_features(extractor, prepared, target))], "block-rms")
        row = {}
        for name, (a, b) in cells(xs, ys, xt).items():
            cs, ct = center_domains(a, b, "domain")
            pred, _ = classify(cs, ys, ct, **SVM)
            crit = criteria_scores(cs, ys, ct, svm=SVM, criteria=["dev", "entropy"])
            row[name] = (100 * float(np.mean(pred == yt)), crit)
        picks = {c: max(row, key=lambda k: np.nan_to_num(row[k][1][c], nan=-np.inf)) for c in ("dev", "entropy")}
        cols = "  ".join(f"{k} {acc:.0f}/{crit['dev']:.3f}" for k, (acc, crit) in row.items())
        print(f"{shift:8s} {cols} | dev picks {picks['dev']} ({row[picks['dev']][0]:.0f}%), entropy picks "
              f"{picks['entropy']} ({row[picks['entropy']][0]:.0f}%); {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
