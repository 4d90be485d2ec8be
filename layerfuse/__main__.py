"""Command line: ``python -m layerfuse list-layers`` prints the node names usable in ``layers:``."""
from __future__ import annotations

import argparse
import sys

from .backbones import BackboneSpec, list_layers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerfuse")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list-layers", help="print ResNet-50 graph node names for the 'layers' config")
    p.add_argument("--architecture", choices=["keras", "torchvision"], default="keras")
    p.add_argument("--maxpool-pad", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "list-layers":
        for name in list_layers(BackboneSpec(args.architecture, "caffe", args.maxpool_pad)):
            print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
