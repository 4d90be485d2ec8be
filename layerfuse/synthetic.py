"""The embedded demo: a deterministic synthetic source -> target image pair.

Ten classes of drawn shapes.  Source images are clean product shots (one
object, centred, plain white background, like Office's Amazon); target images
add what a webcam adds (clutter, a coloured background, lighting and colour
casts, blur, sensor noise, low resolution, scale and position changes).
Object colour is random in both domains, so shape is what a classifier must use.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["SHAPES", "make_demo_dataset"]

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "arrow", "crescent"]


def _polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def pts(radii_angles):
        return [(cx + rr * math.cos(a + rot), cy + rr * math.sin(a + rot)) for rr, a in radii_angles]

    if kind == "square":
        return pts([(r, math.pi / 4 + k * math.pi / 2) for k in range(4)])
    if kind == "triangle":
        return pts([(r, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)])
    if kind == "diamond":
        return pts([(r if k % 2 == 0 else 0.55 * r, k * math.pi / 2) for k in range(4)])
    if kind == "hexagon":
        return pts([(r, k * math.pi / 3) for k in range(6)])
    if kind == "star":
        return pts([(r if k % 2 == 0 else 0.42 * r, -math.pi / 2 + k * math.pi / 5) for k in range(10)])
    if kind == "cross":
        w = 0.33 * r
        base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    elif kind == "arrow":
        base = [(-r, -0.25 * r), (0.2 * r, -0.25 * r), (0.2 * r, -0.65 * r), (r, 0), (0.2 * r, 0.65 * r),
                (0.2 * r, 0.25 * r), (-r, 0.25 * r)]
    else:
        raise ValueError(kind)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float, rot: float):
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "circle":
        d.ellipse(box, fill=255)
    elif kind == "ring":
        d.ellipse(box, fill=255)
        d.ellipse([cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r], fill=0)
    elif kind == "crescent":
        d.ellipse(box, fill=255)
        ox, oy = 0.45 * r * math.cos(rot), 0.45 * r * math.sin(rot)
        d.ellipse([cx - r + ox, cy - r + oy, cx + r + ox, cy + r + oy], fill=0)
    else:
        d.polygon(_polygon(kind, cx, cy, r, rot), fill=255)
    return mask


def _random_colour(rng, low=30, high=225):
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def _render(kind: str, rng, size: int, target: bool):
    if not target:
        bg = Image.new("RGB", (size, size), (255, 255, 255))
        r = size * rng.uniform(0.28, 0.38)
        cx = size / 2 + rng.uniform(-0.04, 0.04) * size
        cy = size / 2 + rng.uniform(-0.04, 0.04) * size
        rot = rng.uniform(-0.3, 0.3)
    else:
        # coloured gradient background with clutter
        a, b = np.array(_random_colour(rng, 40, 220)), np.array(_random_colour(rng, 40, 220))
        t = np.linspace(0, 1, size)[None, :, None]
        grad = (a * (1 - t) + b * t) * np.ones((size, 1, 1))
        bg = Image.fromarray(grad.astype(np.uint8), "RGB")
        d = ImageDraw.Draw(bg)
        for _ in range(int(rng.integers(6, 14))):
            x0, y0 = rng.uniform(0, size, 2)
            x1, y1 = x0 + rng.uniform(-0.4, 0.4) * size, y0 + rng.uniform(-0.4, 0.4) * size
            if rng.random() < 0.5:
                d.line([x0, y0, x1, y1], fill=_random_colour(rng), width=int(rng.integers(2, 7)))
            else:
                d.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
                            outline=_random_colour(rng), width=int(rng.integers(1, 4)))
        r = size * rng.uniform(0.16, 0.36)
        cx, cy = rng.uniform(r, size - r, 2)
        rot = rng.uniform(-math.pi, math.pi)
    obj = Image.new("RGB", (size, size), _random_colour(rng))
    bg.paste(obj, (0, 0), _shape_mask(kind, size, cx, cy, r, rot))
    if not target:
        return bg
    arr = np.asarray(bg, dtype=np.float32)
    gain = rng.uniform(0.55, 1.35) * rng.uniform(0.8, 1.2, size=3)  # lighting + colour cast
    arr = arr * gain + rng.uniform(-25, 25)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    low = int(size * rng.uniform(0.3, 0.6))  # webcam resolution
    img = img.resize((low, low), Image.BILINEAR).resize((size, size), Image.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.8)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(4, 16), (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def make_demo_dataset(out_dir: str | Path, *, n_classes: int = 10, n_source: int = 15, n_target: int = 10,
                      size: int = 224, seed: int = 0) -> dict[str, Path]:
    """Write ``out_dir/{source,target}/<shape>/<nnn>.png`` deterministically.

    Returns the two dataset folders.  ``n_source``/``n_target`` are images per class.
    """
    if not 2 <= n_classes <= len(SHAPES):
        raise ValueError(f"n_classes must be between 2 and {len(SHAPES)}, got {n_classes}")
    out_dir = Path(out_dir)
    folders = {}
    for d_index, (domain, n) in enumerate((("source", n_source), ("target", n_target))):
        for c_index, kind in enumerate(SHAPES[:n_classes]):
            rng = np.random.default_rng([seed, d_index, c_index])
            cdir = out_dir / domain / kind
            cdir.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _render(kind, rng, size, domain == "target").save(cdir / f"{i:03d}.png", optimize=False)
        folders[domain] = out_dir / domain
    return folders
