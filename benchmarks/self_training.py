"""Target self-training (``selection.refine``) on finished runs: the label-free pick with and without it, beside
the centred Global cell without an adapter, and what it costs.

    python benchmarks/self_training.py results/officeaw results/ham10000ph2 ... [--backbone imagenet]
        [--rounds 1 3 5] [--balance uniform predicted]

For each experiment folder (a finished run: ``fused/<backbone>/global.h5``, ``adapted/<backbone>/global/``,
``scores/<backbone>/global.csv`` and ``selection/<backbone>.csv``), the candidate cells of the label-free
pick (the global feature set's adapters at ``domain`` centring, ``selection.scope: global``) are refitted
here as ``evaluate_svm`` fits them: the workflow's linear SVM on the source, and
:func:`layerfuse.self_training.refine_cell` at each number of rounds and balance.  Printed per experiment:
accuracy / balanced accuracy (%) of the centred Global cell without an adapter (the floor a default must
not fall more than 0.5 point below), of the default criterion's pick (its criterion row in the selection
table) plain and refined, the candidates combined (``ensemble uniform|criterion``: every candidate cell's
decision values, weighted equally or by the default criterion's scores, plain or refined: ``selection.combine``),
the refits' time over the plain SVM's on the same cells, in this run, and the refits' seconds over the job seconds the run recorded (``benchmarks/<experiment>/``, an earlier
measurement on the machine that ran it).
At the end, per setting, the mean over pairs (Corel-1000's ``s<seed>`` splits averaged first) and the
largest fall below the floor.  No target label enters a fit; they score the result only.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from layerfuse import adapt
from layerfuse.evaluate import center_domains
from layerfuse.h5io import read_pair
from layerfuse.self_training import BALANCES, refine_cell
from layerfuse.select import vote_weights
from layerfuse.svm import decision_matrix, fit_svm
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pair_means, require_run, run_seconds  # noqa: E402

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}


def _scores(yt, pred) -> tuple[float, float]:
    return 100 * float((pred == yt).mean()), 100 * float(balanced_accuracy_score(yt, pred))


def _pairs(root: Path, backbone: str) -> tuple[dict, list[str]]:
    """The stores of the global feature set's cells, and the adapters its score rows list."""
    scores = pd.read_csv(root / "scores" / backbone / "global.csv")
    adapters = list(dict.fromkeys(scores["adapter"]))
    pairs = {"none": read_pair(root / "fused" / backbone / "global.h5")}
    for adapter in adapters:
        if adapter != adapt.NO_ADAPTER:
            key, _ = adapt.parse_cell(adapter)
            if key not in pairs:
                pairs[key] = read_pair(root / "adapted" / backbone / "global" / f"{key}.h5")
    return pairs, adapters


def run(root: Path, backbone: str, settings: list[tuple[int, str]]) -> dict:
    """``{"floor", "pick", "pick refined <rounds> <balance>": (accuracy, balanced)}`` and ``time x``: the
    refits' seconds over the plain SVM's on every candidate cell."""
    selection = pd.read_csv(root / "selection" / f"{backbone}.csv")
    pick = selection[(selection["kind"] != "refined") & selection["criterion"].eq(
        selection.loc[selection["default"].astype(bool), "criterion"].iloc[0])].iloc[0]
    pairs, adapters = _pairs(root, backbone)
    out, plain_s, refine_s = {}, 0.0, defaultdict(float)
    votes = defaultdict(dict)                  # each candidate cell's decision values, for the ensembles
    for adapter in adapters:
        xs, xt, ys, yt, _, failed, _ = adapt.cell_features(pairs, adapter)
        if failed:
            continue
        if (yt < 0).any():
            raise ValueError(f"{root}: the target is unlabelled; nothing to score")
        cs, ct = center_domains(xs, xt, "domain")
        t = time.perf_counter()
        svm = fit_svm(cs, ys, **SVM)
        plain = svm.predict(ct)
        plain_s += time.perf_counter() - t
        votes["plain"][adapter] = svm.decision_function(ct)
        if adapter == adapt.NO_ADAPTER:
            out["floor"] = _scores(yt, plain)
        is_pick = pick["featureset"] == "global" and pick["adapter"] == adapter and pick["center"] == "domain"
        if is_pick:
            out["pick"] = _scores(yt, plain)
        for rounds, balance in settings:
            t = time.perf_counter()
            pred, _, est = refine_cell(cs, ys, ct, refine={"method": "self_training", "rounds": rounds,
                                                           "balance": balance}, svm=SVM)
            refine_s[(rounds, balance)] += time.perf_counter() - t
            votes[f"refined {rounds} {balance}"][adapter] = est.decision_function(ct)
            if is_pick:
                out[f"pick refined {rounds} {balance}"] = _scores(yt, pred)
    if "pick" not in out:
        raise ValueError(f"{root}: the pick {pick['featureset']}/{pick['adapter']}/{pick['center']} is not a "
                         "global cell at domain centring (selection.scope: global, svm.center: domain)")
    # the candidates combined (selection.combine): their decision values, weighted equally (uniform) or by the
    # default criterion's scores (criterion, the workflow's default; layerfuse.select.vote_weights)
    scores = pd.read_csv(root / "scores" / backbone / "global.csv")
    crit = scores[scores["center"] == "domain"].set_index("adapter")[f"crit_{pick['criterion']}"]
    voting = [a for a in adapters if a in crit.index and not np.isnan(crit[a]) and a in votes["plain"]]
    for name, decisions in votes.items():
        for method in ("uniform", "criterion"):
            weights = np.round(vote_weights([crit[a] for a in voting], method), 6)
            vote = sum(w * decision_matrix(decisions[a]).astype(np.float64)
                       for w, a in zip(weights, voting))
            out[f"ensemble {method} {name}"] = _scores(yt, vote.argmax(1))
    out["time"] = {k: v / plain_s for k, v in refine_s.items()}
    out["seconds"] = dict(refine_s)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results/<experiment> folders of finished runs")
    parser.add_argument("--backbone", default="imagenet")
    parser.add_argument("--rounds", nargs="+", type=int, default=[1, 3, 5])
    parser.add_argument("--balance", nargs="+", default=list(BALANCES), choices=BALANCES)
    args = parser.parse_args(argv)
    settings = [(r, b) for b in args.balance for r in args.rounds]
    by_pair = defaultdict(list)
    for root in args.results:
        require_run(root, f"fused/{args.backbone}/global.h5", f"selection/{args.backbone}.csv")
        res = run(root, args.backbone, settings)
        floor = res["floor"]
        print(f"{root.name} / {args.backbone}")
        for name, (acc, bal) in ((k, v) for k, v in res.items() if k not in ("time", "seconds")):
            print(f"  {name:<30} {acc:5.1f} / {bal:5.1f}   {acc - floor[0]:+5.1f} / {bal - floor[1]:+5.1f}")
        print("  time x (refits / plain SVM, every candidate cell): " +
              ", ".join(f"{r} {b}: {v:.1f}" for (r, b), v in res["time"].items()))
        total = run_seconds(root)
        if total:
            print(f"  refits' seconds / the run's recorded job seconds ({total:.0f} s): " +
                  ", ".join(f"{r} {b}: {100 * v / total:.1f}%" for (r, b), v in res["seconds"].items()))
        by_pair[re.sub(r"s\d+$", "", root.name)].append(res)
    names = (["floor", "pick"] + [f"pick refined {r} {b}" for r, b in settings]
             + [f"ensemble {m} {v}" for m in ("uniform", "criterion")
                for v in ["plain"] + [f"refined {r} {b}" for r, b in settings]])
    print(f"\nmean over {len(by_pair)} pair(s) (splits averaged first); worst: the largest fall below the floor")
    for name in names:
        acc, bal, gap, worst = pair_means(by_pair, name, reference="floor")
        print(f"  {name:<30} {acc:5.2f} / {bal:5.2f}   vs floor {-gap:+5.2f}, worst {worst:+5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
