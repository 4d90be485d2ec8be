"""Command line: ``python -m layerfuse list-layers | predict``."""
from __future__ import annotations

import argparse
import logging
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m layerfuse")
    parser.add_argument("--version", action="version", version=f"layerfuse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list-layers", help="print ResNet-50 graph node names for the 'layers' config")
    p.add_argument("--architecture", choices=["keras", "torchvision"], default="keras")
    p.add_argument("--maxpool-pad", action="store_true")
    p = sub.add_parser("predict", help="classify image files or folders with a saved model",
                       description="Classify images with a model the workflow saved in "
                                   "results/<experiment>/model/<backbone>. Folders are searched recursively; "
                                   "unreadable files are listed with the reason (status 'skipped').")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--model", required=True, help="a model folder: results/<experiment>/model/<backbone>")
    p.add_argument("-o", "--output", required=True, help="predictions CSV to write")
    p.add_argument("--weights", help="the backbone's .pth when it is not where the model recorded it "
                                     "(its sha256 must match)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list-layers":
        from .backbones import BackboneSpec, list_layers

        for name in list_layers(BackboneSpec(args.architecture, "caffe", args.maxpool_pad)):
            print(name)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        from .model import predict

        table = predict(args.model, args.paths, args.output, weights=args.weights, batch_size=args.batch_size,
                        threads=args.threads)
    except (ValueError, OSError) as exc:                  # one line; no traceback for bad input
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ok = table["status"] == "ok"
    print(f"{int(ok.sum())} image(s) classified, {int((~ok).sum())} skipped: {args.output}")
    if ok.any():
        counts = table.loc[ok, "predicted"].value_counts()
        print("predicted: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
