"""One ablation table from run folders: mean ± std over seeds, next to the paper's numbers.

    python experiments/aggregate.py RUN_DIR [RUN_DIR ...] --rows KEY[,KEY...] \\
        [--paper pruning|target|fusion|sensitivity] [--markdown OUT.md] [--list]

Every folder under the RUN_DIRs that holds both ``metrics.json`` (with test keys) and
``config_resolved.yaml`` is one run. Runs are grouped by the value of the config
key(s) ``--rows`` (dotted paths into the resolved config, e.g. ``model.loss.pruning``)
and, inside a row, told apart by ``seed``; two runs of one row with the same seed are
an error (a stale folder). Each cell is the mean ± sample standard deviation
(ddof 1) over seeds of ``test/mAP@t`` in %, for the tIoU thresholds of the runs.

``--paper`` names one of the paper's tables (Tables 5-7 of SALAD, WACV 2021): its
rows come first, in the paper's order and with the paper's labels and numbers;
rows the paper does not have follow, sorted. ``--list`` prints, per run,
``row<TAB>seed<TAB>folder<TAB>average test mAP (%)`` instead of the table (the
scripts find checkpoints with it; it also shows seed-by-seed comparisons).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import yaml

# The paper's tables on THUMOS14 (mAP % at tIoU 0.1, 0.2, 0.3, 0.4, 0.5), keyed by the
# row value that our config takes for the row. "Frozen" is printed as in the paper
# (its 0.3 and 0.4 columns read 45.4 twice there).
PAPER_TIOU = (0.1, 0.2, 0.3, 0.4, 0.5)
SALAD = (73.3, 70.7, 65.7, 57.0, 44.6)
PAPER: dict[str, dict[str, tuple[str, tuple[float, ...] | None]]] = {
    "pruning": {  # Table 5, rows by model.loss.pruning
        "none": ("No pruning", (66.2, 63.0, 57.0, 46.9, 32.0)),
        "top1_iou": ("Top 1 IoU", (55.7, 53.4, 48.3, 38.9, 27.4)),
        "random": ("Random", (65.8, 62.6, 56.6, 46.2, 32.9)),
        "frozen": ("Frozen", (63.2, 57.5, 45.4, 45.4, 31.5)),
        "salad": ("SALAD (pruning)", SALAD),
    },
    "target": {  # Table 6, rows by model.loss.target
        "max_score": ("y_t = 1 <=> t = argmax p_t (max_score)", (59.4, 56.7, 51.3, 42.0, 30.6)),
        "score_gt_half": ("y_t = 1 <=> p_t > 0.5 (score_gt_half)", (66.4, 62.7, 53.8, 41.2, 26.7)),
        "iou_gt_mu": ("y_t = 1 <=> tIoU_t > mu (iou_gt_mu)", (65.5, 62.3, 53.7, 40.9, 28.0)),
        "salad": ("SALAD", SALAD),
    },
    "fusion": {  # Table 7, rows by model.postprocess.fusion
        "arithmetic": ("Arithmetic mean", (63.5, 61.7, 58.2, 51.1, 41.1)),
        "geometric": ("Geometric mean", (65.7, 63.8, 60.0, 52.7, 42.4)),
        "normalized_product": ("Normalized product", (67.2, 65.2, 64.5, 53.8, 43.2)),
        "regression": ("SALAD (regression score only)", SALAD),
    },
    # Rows by model.loss.lambda1,lambda2,mu, one changed at a time. The paper states
    # lambda1 = 1, lambda2 = 0.1, mu = 0.5 (its SALAD row) and reports no sweep.
    "sensitivity": {
        "1.0,0.1,0.5": ("λ1 = 1, λ2 = 0.1, µ = 0.5 (the paper's setting)", SALAD),
        "0.5,0.1,0.5": ("λ1 = 0.5", None),
        "2.0,0.1,0.5": ("λ1 = 2", None),
        "1.0,0.05,0.5": ("λ2 = 0.05", None),
        "1.0,0.5,0.5": ("λ2 = 0.5", None),
        "1.0,0.1,0.3": ("µ = 0.3", None),
        "1.0,0.1,0.7": ("µ = 0.7", None),
    },
}


@dataclass(frozen=True)
class Run:
    row: str
    seed: int
    folder: Path
    maps: dict[float, float]  # tIoU -> test mAP (fraction)


def _lookup(cfg: dict, dotted: str, where: Path):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{where}: config_resolved.yaml has no key {dotted!r}")
        node = node[part]
    return node


def _fmt_value(v) -> str:
    return f"{float(v)}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def load_runs(run_dirs: list[Path], row_keys: list[str]) -> list[Run]:
    """Every finished test run under ``run_dirs`` (sorted by row, seed)."""
    runs = []
    for root in run_dirs:
        if not root.is_dir():
            raise FileNotFoundError(f"run folder {root} does not exist")
        for metrics_path in sorted(root.rglob("metrics.json")):
            folder = metrics_path.parent
            cfg_path = folder / "config_resolved.yaml"
            if not cfg_path.is_file():
                continue
            metrics = json.loads(metrics_path.read_text())
            maps = {
                float(k.split("@", 1)[1]): float(v)
                for k, v in metrics.items()
                if k.startswith("test/mAP@")
            }
            if not maps:  # a validate-only run
                continue
            cfg = yaml.safe_load(cfg_path.read_text())
            row = ",".join(_fmt_value(_lookup(cfg, k, cfg_path)) for k in row_keys)
            runs.append(Run(row, int(cfg["seed"]), folder, maps))
    seen: dict[tuple[str, int], Path] = {}
    for r in runs:
        if (r.row, r.seed) in seen:
            raise ValueError(
                f"row {r.row!r} seed {r.seed} has two runs: {seen[(r.row, r.seed)]} and "
                f"{r.folder}; remove the stale one"
            )
        seen[(r.row, r.seed)] = r.folder
    return sorted(runs, key=lambda r: (r.row, r.seed, str(r.folder)))


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    seeds: tuple[int, ...]
    mean: dict[float, float]  # in %
    std: dict[float, float]  # in %, nan with one seed
    paper: tuple[float, ...] | None


def summarise(runs: list[Run], paper: str | None) -> tuple[list[float], list[Row]]:
    """The thresholds and the rows (paper's rows first, in its order; then the rest, sorted)."""
    table = PAPER.get(paper, {}) if paper else {}
    if paper and paper not in PAPER:
        raise ValueError(f"--paper {paper!r} is not one of {sorted(PAPER)}")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.row, []).append(r)
    tious = sorted({t for r in runs for t in r.maps})
    order = [k for k in table if k in groups] + sorted(k for k in groups if k not in table)
    rows = []
    for key in order:
        group = groups[key]
        mean_, std_ = {}, {}
        for t in tious:
            vals = [100.0 * r.maps[t] for r in group if t in r.maps]
            mean_[t] = mean(vals) if vals else math.nan
            std_[t] = stdev(vals) if len(vals) > 1 else math.nan
        label, numbers = table.get(key, (key, None))
        rows.append(Row(key, label, tuple(r.seed for r in group), mean_, std_, numbers))
    return tious, rows


def _cell(m: float, s: float) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def _ranking(rows: list[Row], values: dict[str, float]) -> str:
    ranked = sorted(rows, key=lambda r: (-values[r.key], r.key))
    return " > ".join(f"{r.key} ({values[r.key]:.2f})" for r in ranked)


def to_markdown(tious: list[float], rows: list[Row], row_keys: list[str]) -> str:
    head = ["row", "seeds", *[f"mAP@{t:g}" for t in tious], "average"]
    has_paper = any(r.paper for r in rows)
    if has_paper:
        head.append("paper mAP@" + "/".join(f"{t:g}" for t in PAPER_TIOU))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    avg = {r.key: mean(r.mean[t] for t in tious) for r in rows}
    for r in rows:
        cells = [r.label, ",".join(map(str, r.seeds))]
        cells += [_cell(r.mean[t], r.std[t]) for t in tious] + [f"{avg[r.key]:.2f}"]
        if has_paper:
            cells.append(" / ".join(f"{v:.1f}" for v in r.paper) if r.paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Rows: `{', '.join(row_keys)}`. Cells: test mAP (%), mean ± sample std (ddof 1) "
        "over the seeds listed; average: mean of the columns."
    )
    lines.append("")
    lines.append(f"- ours, by average: {_ranking(rows, avg)}")
    for t in (0.5,) if 0.5 in tious else ():
        lines.append(f"- ours, by mAP@0.5: {_ranking(rows, {r.key: r.mean[t] for r in rows})}")
    paper_rows = [r for r in rows if r.paper]
    if len(paper_rows) > 1:
        pavg = {r.key: mean(r.paper) for r in paper_rows}
        lines.append(f"- paper, by average of its 5 columns: {_ranking(paper_rows, pavg)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--rows", required=True, help="config key(s), comma-separated")
    p.add_argument("--paper", choices=sorted(PAPER), default=None)
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--title", default=None, help="a heading above the table")
    p.add_argument("--note", action="append", default=[], help="a line under the heading")
    p.add_argument(
        "--list", action="store_true", help="print row, seed, folder, average mAP per run"
    )
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    try:
        runs = load_runs(args.run_dirs, keys)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"aggregate.py: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"no finished test runs under {', '.join(map(str, args.run_dirs))}", file=sys.stderr)
        return 1
    if args.list:
        for r in runs:
            average = 100.0 * mean(r.maps.values())
            print(f"{r.row}\t{r.seed}\t{r.folder}\t{average:.2f}")
        return 0
    text = to_markdown(*summarise(runs, args.paper), keys)
    head = ([f"# {args.title}", ""] if args.title else []) + [f"- {n}" for n in args.note]
    if head:
        text = "\n".join([*head, "", text])
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
