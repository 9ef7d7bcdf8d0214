"""The convergence pilot's table and its rule: which training budget the tables run on.

    python experiments/convergence.py [logs/convergence] [--markdown OUT.md]

Reads the SALAD runs of experiments/convergence.sh (``logs/convergence/E<epochs>/seed<s>``:
each a run of ``experiment=thumos_shaped_regime`` with a cosine schedule over E epochs,
a 10-video holdout, the train fit measured on every training video and the holdout
validated every E/10 epochs) and prints, per budget and seed, the train fit and the
holdout mAP at 80% of the epochs and at the end, the test mAP (reported, never used by
the rule), and the rule's verdict. All mAPs are the average over tIoU 0.1-0.5, in %.

THE RULE (fixed before any of its runs, and before any ablation row runs on its choice):
the tables' budget E* is the smallest candidate E such that, in the mean over the seeds,

1. the train fit at the end is at least 90: the model fits its training videos;
2. the train fit has plateaued: the last 20% of the epochs add less than 1 point;
3. the holdout has stopped improving: its mAP at the end is less than 1 point above its
   best at or before 80% of the epochs;
4. twice the budget (the next candidate) adds less than 1 point to the train fit and
   less than 1 point to the holdout mAP (a candidate without a larger one cannot meet
   this: the largest candidate is only the answer when no smaller one qualifies, and
   the table says so).

Under a cosine schedule the learning rate is small in the last 20% of any budget, so
(2) and (3) alone would pass an undertrained run; (1) and (4) are what say the budget
is enough. The test split plays no part.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path
from statistics import mean

POINT = 1.0  # points of mAP (%)
FIT_FLOOR = 90.0


def _curve(run: Path, key: str) -> dict[int, float]:
    """{epochs done: value in %} of a logged key (CSV log), per epoch it was logged at."""
    out: dict[int, float] = {}
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get(key):
                out[int(row["epoch"]) + 1] = 100.0 * float(row[key])
    return out


def _test(run: Path) -> float:
    m = json.loads((run / "metrics.json").read_text())
    return 100.0 * m["test/mAP"]


def read(root: Path) -> dict[int, list[dict[str, float]]]:
    """{E: [per seed: fit_80, fit_end, hold_best_80, hold_end, test]} of finished runs."""
    found: dict[int, list[dict[str, float]]] = {}
    for folder in sorted(root.glob("E*/seed*")):
        match = re.fullmatch(r"E(\d+)", folder.parent.name)
        if not match or not (folder / "metrics.json").is_file():
            continue
        epochs = int(match.group(1))
        fit, hold = _curve(folder, "train/mAP"), _curve(folder, "val/mAP")
        at80 = round(0.8 * epochs)
        if at80 not in fit or epochs not in fit or epochs not in hold:
            raise SystemExit(
                f"{folder}: the train fit or the holdout was not logged at {at80} and {epochs}"
            )
        found.setdefault(epochs, []).append(
            {
                "seed": int(folder.name[4:]),
                "fit_80": fit[at80],
                "fit_end": fit[epochs],
                "hold_best_80": max(v for e, v in hold.items() if e <= at80),
                "hold_end": hold[epochs],
                "test": _test(folder),
            }
        )
    return found


def verdicts(found: dict[int, list[dict[str, float]]]) -> tuple[dict[int, list[str]], int | None]:
    """Each budget's unmet conditions (empty: all met) and the chosen budget (None: none)."""
    budgets = sorted(found)
    means = {
        e: {k: mean(r[k] for r in found[e]) for k in found[e][0] if k != "seed"} for e in budgets
    }
    unmet: dict[int, list[str]] = {}
    for i, e in enumerate(budgets):
        m, why = means[e], []
        if m["fit_end"] < FIT_FLOOR:
            why.append(f"1: train fit {m['fit_end']:.2f} < {FIT_FLOOR:g}")
        if m["fit_end"] - m["fit_80"] >= POINT:
            why.append(f"2: the last 20% add {m['fit_end'] - m['fit_80']:.2f} to the train fit")
        if m["hold_end"] - m["hold_best_80"] >= POINT:
            why.append(
                f"3: the holdout gains {m['hold_end'] - m['hold_best_80']:.2f} in the last 20%"
            )
        if i + 1 == len(budgets):
            why.append("4: no larger budget to compare with")
        else:
            nxt = means[budgets[i + 1]]
            if nxt["fit_end"] - m["fit_end"] >= POINT or nxt["hold_end"] - m["hold_end"] >= POINT:
                why.append(
                    f"4: {budgets[i + 1]} epochs add {nxt['fit_end'] - m['fit_end']:.2f} (train fit), "
                    f"{nxt['hold_end'] - m['hold_end']:.2f} (holdout)"
                )
        unmet[e] = why
    chosen = next((e for e in budgets if not unmet[e]), None)
    return unmet, chosen


def table(found: dict[int, list[dict[str, float]]]) -> str:
    unmet, chosen = verdicts(found)
    lines = [
        "| epochs | seed | train fit at 80% | train fit at the end | holdout, best to 80% | holdout at the end | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in sorted(found):
        for r in sorted(found[e], key=lambda r: r["seed"]):
            lines.append(
                f"| {e} | {r['seed']} | {r['fit_80']:.2f} | {r['fit_end']:.2f} | "
                f"{r['hold_best_80']:.2f} | {r['hold_end']:.2f} | {r['test']:.2f} |"
            )
        m = {
            k: mean(r[k] for r in found[e])
            for k in ("fit_80", "fit_end", "hold_best_80", "hold_end", "test")
        }
        lines.append(
            f"| **{e}** | mean | {m['fit_80']:.2f} | {m['fit_end']:.2f} | {m['hold_best_80']:.2f} | "
            f"{m['hold_end']:.2f} | {m['test']:.2f} |"
        )
    lines += ["", "| epochs | conditions not met |", "|---|---|"]
    for e in sorted(found):
        lines.append(f"| {e} | {'; '.join(unmet[e]) or 'none: all four met'} |")
    lines.append("")
    if chosen is not None:
        lines.append(f"The rule chooses **{chosen} epochs**.")
    else:
        largest = max(found) if found else math.nan
        lines.append(f"No budget meets the rule; the largest, {largest} epochs, is the closest.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("root", nargs="?", type=Path, default=Path("logs/convergence"))
    p.add_argument("--markdown", type=Path, help="also write the table there")
    args = p.parse_args(argv)
    found = read(args.root)
    if not found:
        print(f"no finished runs under {args.root}", file=sys.stderr)
        return 1
    text = table(found)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
