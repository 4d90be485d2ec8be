"""Command line: ``python -m layerfuse list-layers | predict | summary``."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from . import __version__
from .weights import cache_dir


def _positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more (a batch of -3 images or -1 threads means nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m layerfuse")
    parser.add_argument("--version", action="version", version=f"layerfuse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list-layers", help="print ResNet-50 graph node names for the 'layers' config")
    p.add_argument("--architecture", choices=["keras", "torchvision"], default="keras",
                   help="the network's layout: keras (the paper's weights; default) or torchvision")
    p.add_argument("--maxpool-pad", action="store_true",
                   help="pad the stem's max-pooling as torchvision does (a backbone's maxpool_pad: true)")
    p.add_argument("--image-size", type=_positive_int, default=224,
                   help="input side in pixels, for the listed output shapes (default: 224)")
    p.add_argument("--configfile", default="config.yaml",
                   help="mark the nodes this config's layers: name (default: config.yaml, when present)")
    p = sub.add_parser("predict", help="classify image files or folders with a saved model",
                       description="Classify images with a model the workflow saved in "
                                   "results/<experiment>/model/<backbone>. Folders are searched recursively; "
                                   "unreadable files are listed with the reason (status 'skipped').")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--model", required=True, help="a model folder: results/<experiment>/model/<backbone>")
    p.add_argument("-o", "--output", required=True, help="predictions CSV to write")
    p.add_argument("--weights", help="the backbone's .pth when it is not where the model recorded it "
                                     "(its sha256 must match)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="images per forward pass (default: the model's extraction batch size)")
    p.add_argument("--threads", type=_positive_int, help="torch's CPU threads (default: torch's own choice)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where the network runs (default: the model's extract.device where one was chosen, else "
                        "auto: a GPU where there is one)")
    p = sub.add_parser("summary", help="a few lines per finished experiment: the pick, its accuracy and the "
                                       "source-only classifier's, where the predictions and model are")
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="results/<experiment> of a finished run")
    p.add_argument("--tables", action="store_true", help="print the experiment's tables.md as well")
    return parser


def summary(results_dir, tables: bool = False) -> list[str]:
    """The summary lines of one finished experiment (its selection CSVs, per backbone)."""
    import pandas as pd  # pandas and scikit-learn load for the summary only: the other commands start faster

    from .select import ALL_FEATURESETS, criterion_label, selection_headline, vote_members  # scikit-learn: summary only

    root = Path(results_dir)
    selections = sorted((root / "selection").glob("*.csv"))
    if not selections:
        raise ValueError(f"{root}: no selection/<backbone>.csv; is this results/<experiment> of a finished run?")
    pct = lambda v: "–" if pd.isna(v) else f"{100 * v:.1f}%"  # noqa: E731
    lines = [f"{root.name}:"]
    for path in selections:
        head = selection_headline(pd.read_csv(path))
        pick, base = head["pick"], head["baseline"]
        if pick.get("kind") == "ensemble":
            members = vote_members(pick)
            if pick["featureset"] == ALL_FEATURESETS:
                sets = list(dict.fromkeys(m[0] for m in members))
                cells = f"{len(members)} cells of {len(sets)} feature sets: {', '.join(sets)}"
            else:
                cells = f"{len(members)} cells of {pick['featureset']}: {', '.join(f'{m[1]}/{m[2]}' for m in members)}"
            line = f"  {path.stem}: {criterion_label(pick)} ({cells}; no target labels)"
        else:
            line = f"  {path.stem}: picked {head['cell']} (by {head['criterion']}, no target labels)"
            if head["refine"]:
                line += f", refitted by {head['refine']} on the target"
        if not pd.isna(pick["accuracy"]):
            line += f": accuracy {pct(pick['accuracy'])}, balanced {pct(pick['balanced_accuracy'])}"
            if not pd.isna(head["source_only"]):
                line += f"; source only (Global, no adaptation) {pct(head['source_only'])}"
            if base is not None:
                line += f"; Global, no adapter, {base['center']} centring {pct(base['accuracy'])}"
            if not pd.isna(head["best"]):
                line += f"; best cell {pct(head['best'])}"
        lines.append(line)
    lines.append(f"  predictions: {root}/predictions/<backbone>.csv; models: {root}/model/<backbone> "
                 "(python -m layerfuse predict)")
    if tables and (root / "tables.md").is_file():
        lines += ["", (root / "tables.md").read_text()]
    return lines


def layer_shapes(architecture: str, maxpool_pad: bool, image_size: int) -> list[tuple[str, tuple]]:
    """:func:`layerfuse.backbones.list_layers`' answer, kept in ``$LAYERFUSE_CACHE/layers`` per torch and
    torchvision version and per version of the code that lists them: building the network, even on meta
    tensors, imports torchvision, which is most of the call's time; a cached answer takes no torch at all."""
    code = hashlib.sha256(Path(__file__).with_name("backbones.py").read_bytes()).hexdigest()[:16]
    key = (f"{architecture}-maxpool{'pad' if maxpool_pad else 'nopad'}-{image_size}-torch{version('torch')}-"
           f"torchvision{version('torchvision')}-{code}")
    path = cache_dir() / "layers" / f"{key}.json"
    try:
        return [(node, tuple(shape)) for node, shape in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):         # not cached yet, or unreadable: listed afresh
        pass
    from .backbones import BackboneSpec, list_layers  # torch: only where the answer is not cached

    shapes = list_layers(BackboneSpec(architecture, "caffe", maxpool_pad), image_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text(json.dumps(shapes))
        partial.replace(path)
    except OSError:                                  # a read-only cache costs the next call its time only
        pass
    return shapes


def main(argv=None) -> int:
    try:
        try:
            code = _run(build_parser().parse_args(argv))
        except SystemExit as exc:                         # --help, --version, usage errors: printed, then exit
            code = exc.code
        sys.stdout.flush()                                # a closed pipe surfaces here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader stopped early (``| head``): end quietly as cat does; stdout goes to /dev/null so that
        # Python's flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13                                   # what a shell reports for a process ended by SIGPIPE


def _run(args) -> int:
    if args.command == "list-layers":
        configured = {}
        if Path(args.configfile).is_file():
            layers = (yaml.safe_load(Path(args.configfile).read_text()) or {}).get("layers") or {}
            configured = {node: key for key, node in layers.items()}
        print(f"{'node':<12} {'output shape':<16} configured as")
        for node, shape in layer_shapes(args.architecture, args.maxpool_pad, args.image_size):
            print(f"{node:<12} {' x '.join(map(str, shape)):<16} {configured.get(node, '')}".rstrip())
        print("(a block's output is its last ReLU; any deeper torchvision node name also works)")
        return 0
    if args.command == "summary":
        try:
            for root in args.results:
                print("\n".join(summary(root, args.tables)))
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        from .model import predict  # torch: classifying images needs the network

        table = predict(args.model, args.paths, args.output, weights=args.weights, batch_size=args.batch_size,
                        threads=args.threads, device=args.device)
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
