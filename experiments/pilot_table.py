"""The pilot's table: each candidate's SALAD runs (experiments/pilot.sh), one line each.

    python experiments/pilot_table.py [logs/pilot] [--names NAME,...]

Per candidate: each seed's average test mAP (%) over the tIoU columns, their mean and
sample std (ddof 1), std / mean, the median wall time of its runs (two side by side),
the range of the 1-minute load average at their starts and ends, and the median CPU
seconds (user + system) of a run, which do not depend on the load
(``logs/pilot/times.tsv``; the last line of a candidate and seed counts).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from statistics import mean, median, stdev


def average_map(run: Path) -> float | None:
    path = run / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    return 100.0 * mean(m[f"test/mAP@{t}"] for t in m["tiou_thresholds"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("root", nargs="?", type=Path, default=Path("logs/pilot"))
    p.add_argument("--names", default=None, help="candidates to list, in this order")
    args = p.parse_args(argv)
    times: dict[tuple[str, int], tuple[float, float, float, float]] = {}
    with open(args.root / "times.tsv") as f:
        for name, seed, wall, load0, load1, _, *cpu in csv.reader(f, delimiter="\t"):
            cpu_s = float(cpu[0]) if cpu else float("nan")  # older lines have no CPU time
            times[(name, int(seed))] = (float(wall), float(load0), float(load1), cpu_s)
    names = args.names.split(",") if args.names else list(dict.fromkeys(n for n, _ in times))
    print(
        "| candidate | average mAP by seed | mean | std | std/mean | wall s (median) | load "
        "| CPU s (median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        seeds = sorted(s for n, s in times if n == name)
        avgs = {s: average_map(args.root / name / f"seed{s}") for s in seeds}
        done = [a for a in avgs.values() if a is not None]
        by_seed = ", ".join(f"{s}: {'–' if a is None else f'{a:.2f}'}" for s, a in avgs.items())
        m = mean(done) if done else float("nan")
        sd = stdev(done) if len(done) > 1 else float("nan")
        walls = [times[(name, s)][0] for s in seeds]
        loads = [x for s in seeds for x in times[(name, s)][1:3]]
        cpus = [c for s in seeds if not math.isnan(c := times[(name, s)][3])]
        print(
            f"| {name} | {by_seed} | {m:.2f} | {sd:.2f} | {sd / m:.3f} | "
            f"{median(walls):.0f} ({', '.join(f'{w:.0f}' for w in walls)}) | "
            f"{min(loads):.1f}-{max(loads):.1f} | "
            f"{f'{median(cpus):.0f}' if cpus else '–'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
