"""``salad-aggregate``: a sweep's table, mean ± std over seeds, in one command; the
paper's ablation tables (experiments/tables/) are made by it.

    salad-aggregate MULTIRUN_DIR [MORE_DIRS ...] [--rows KEY[,KEY...]]
        [--paper pruning|target|fusion|sensitivity|pgcn] [--reference ROW|none]
        [--bootstrap 10000] [--bootstrap-seed 0] [--markdown OUT.md] [--json OUT.json]
        [--title T] [--note N]... [--list]

Every folder under the MULTIRUN_DIRs that holds both ``metrics.json`` (with test keys)
and ``config_resolved.yaml`` is one run; each named folder must hold at least one. Runs
are grouped into rows by the keys that were swept: the config keys whose values differ
between the runs (read from each job's ``.hydra/overrides.yaml``, else from the
resolved configs), but ``seed``, which tells replicates apart, and ``paths.*`` and
``hydra.*`` (where files went). Such a row is labelled ``key=value[,key=value]`` (numbers
as floats: ``1`` and ``1.0`` are one row); a sweep over seeds only gives one row.
``--rows`` names the keys instead (dotted paths, e.g. ``model.loss.pruning``; a row is
then labelled by its values, ``0.5,0.1``), as does ``--paper``. Two runs of one row with
the same seed are an error (a stale folder), and so are runs scored at different tIoU
thresholds. Each cell is the mean ± sample standard deviation (ddof 1) over seeds of
``test/mAP@t`` in %.

``--paper`` names one of the paper's tables (Tables 5-7 of SALAD, WACV 2021, and Table 2's
SALAD + P-GCN row): its rows come first, in the paper's order and with the paper's labels
and numbers;
rows the paper does not have follow, sorted. ``--list`` prints, per run,
``row<TAB>seed<TAB>folder<TAB>average test mAP (%)<TAB>detections`` instead of the
table.

**Runs with no detection.** Each run's ``results.json`` (the detections it was
scored on) is read and its detections counted. A run with none scores 0 at every
tIoU; it stays in the means (it is what the method gave) but its seed is listed in
the table's "no detection" column, so a low mean never hides an empty run silently.

**Paired differences.** With a reference row (``--reference``, a row's key or label
as printed; by default SALAD's row of the ``--paper`` table), every other row gets, on
the seeds it shares with the reference, the per-seed difference ``d_s = row_s -
reference_s`` of the average over the tIoU columns and of mAP@0.5 (in points of %),
their mean, and two 95% intervals for the mean difference: the paired t interval
``mean ± t(0.975, n-1) · sd / sqrt(n)`` and a percentile bootstrap over seeds
(``--bootstrap`` resamples of the n differences with replacement, drawn with
``numpy.random.default_rng(--bootstrap-seed)``). The row is "better" (than the
reference) when the t interval lies above 0, "worse" when it lies below 0, and
"not resolved" otherwise (or with fewer than 2 paired seeds); where the bootstrap
interval says otherwise, the verdict notes it (:mod:`salad_lightning.paired`).

The table goes to stdout, and also to ``--markdown`` / ``--json`` (written atomically).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from salad_lightning.paired import Paired, paired
from salad_lightning.sweeps import (
    AggregateError,
    Row,
    Run,
    find_runs,
    group_runs,
    row_order,
    swept_keys,
)
from salad_lightning.utils.io import atomic_write_json, atomic_write_text

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
    # Table 2's SALAD rows, by the model's class (model._target_)
    "pgcn": {
        "salad_lightning.lit_module.SaladLitModule": ("SALAD", SALAD),
        "salad_lightning.pgcn.module.PGCNLitModule": (
            "SALAD + P-GCN",
            (75.2, 73.4, 69.4, 61.6, 49.8),
        ),
    },
}


# The row every other row is compared with, seed by seed, per --paper table.
REFERENCE = {
    "pruning": "salad",
    "target": "salad",
    "fusion": "regression",
    "sensitivity": "1.0,0.1,0.5",
    "pgcn": "salad_lightning.lit_module.SaladLitModule",
}


# The keys each paper table's rows are told apart by (its rows are these keys' values).
PAPER_ROWS = {
    "pruning": ["model.loss.pruning"],
    "target": ["model.loss.target"],
    "fusion": ["model.postprocess.fusion"],
    "sensitivity": ["model.loss.lambda1", "model.loss.lambda2", "model.loss.mu"],
    "pgcn": ["model._target_"],
}


def summarise(runs: list[Run], paper: str | None = None) -> tuple[list[float], list[Row]]:
    """The thresholds and the rows: mean and sample std (ddof 1) over seeds, in %; the
    paper's rows first, in its order, then the rest, sorted."""
    if paper and paper not in PAPER:
        raise AggregateError(f"--paper {paper!r} is not one of {sorted(PAPER)}")
    table = PAPER[paper] if paper else {}
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.row, []).append(r)
    tious = sorted({t for r in runs for t in r.maps})
    rest = sorted(
        (k for k in groups if k not in table), key=lambda k: (row_order(groups[k][0].values), k)
    )
    rows = []
    for key in [k for k in table if k in groups] + rest:
        group = groups[key]
        mean_, std_ = {}, {}
        for t in tious:
            vals = [100.0 * r.maps[t] for r in group if t in r.maps]
            mean_[t] = mean(vals) if vals else math.nan
            std_[t] = stdev(vals) if len(vals) > 1 else math.nan
        label, numbers = table.get(key, (key, None))
        seeds = tuple(r.seed for r in group)
        rows.append(Row(key, label, seeds, mean_, std_, numbers, tuple(group)))
    return tious, rows


def _cell(m: float, s: float) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def _short(key: str) -> str:
    """A row key as the ranking names it: a class path (a ``_target_``'s value) by its
    class, ``salad_lightning.pgcn.module.PGCNLitModule`` -> ``PGCNLitModule``."""
    parts = key.split(".")
    if len(parts) > 2 and all(p.isidentifier() for p in parts):
        return parts[-1]
    return key


def _ranking(rows: list[Row], values: dict[str, float]) -> str:
    ranked = sorted(rows, key=lambda r: (-values[r.key], r.key))
    return " > ".join(f"{_short(r.key)} ({values[r.key]:.2f})" for r in ranked)


def _train_fit_lines(rows: list[Row], seeds: list[int]) -> list[str]:
    """The rows whose runs measured their train fit (``callbacks.train_fit``): its value
    by seed and the mean, in markdown; none when no run did."""
    fitted = [r for r in rows if any(run.train_fit is not None for run in r.runs)]
    if not fitted:
        return []
    lines = ["", "Train fit of each run (average mAP (%) of the tested weights on the "
             "training videos it measured, `callbacks.train_fit`), by seed:", ""]  # fmt: skip
    lines.append("| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    lines.append("|" + "---|" * (len(seeds) + 2))
    for r in fitted:
        by_seed = {run.seed: run.train_fit for run in r.runs}
        cells = ["–" if by_seed.get(s) is None else f"{by_seed[s]:.2f}" for s in seeds]
        values = [v for v in by_seed.values() if v is not None]
        lines.append(f"| {r.label} | " + " | ".join(cells) + f" | {mean(values):.2f} |")
    return lines


def _empty_cell(row: Row) -> str:
    cell = ",".join(map(str, row.empty_seeds)) or "–"
    unknown = [r.seed for r in row.runs if r.detections is None]
    if unknown:
        cell += f" (no results.json: {','.join(map(str, unknown))})"
    return cell


def _interval(iv: tuple[float, float]) -> str:
    return "–" if math.isnan(iv[0]) else f"[{iv[0]:+.2f}, {iv[1]:+.2f}]"


@dataclass(frozen=True)
class Table:
    """What :func:`to_markdown` and :func:`to_json` write: the tIoU thresholds, the rows
    (:func:`summarise`), the keys that made the rows, and the rows paired with
    ``reference`` (its key; :func:`~salad_lightning.paired.paired`, ``resamples`` and
    ``seed`` its bootstrap's)."""

    tious: list[float]
    rows: list[Row]
    row_keys: list[str]
    pairs: list[Paired] | None = None
    reference: str | None = None
    resamples: int = 10000
    seed: int = 0


def to_markdown(table: Table) -> str:
    """The table, each run's average by seed, and the rows paired with ``reference`` (its
    key), in markdown: what the table scripts write to experiments/results/."""
    tious, rows, row_keys, pairs = table.tious, table.rows, table.row_keys, table.pairs
    reference, resamples, seed = table.reference, table.resamples, table.seed
    head = ["row", "seeds", "no detection", *[f"mAP@{t:g}" for t in tious], "average"]
    has_paper = any(r.paper for r in rows)
    if has_paper:
        head.append("paper mAP@" + "/".join(f"{t:g}" for t in PAPER_TIOU))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    avg = {r.key: mean(r.mean[t] for t in tious) for r in rows}
    for r in rows:
        cells = [r.label, ",".join(map(str, r.seeds)), _empty_cell(r)]
        cells += [_cell(r.mean[t], r.std[t]) for t in tious] + [f"{avg[r.key]:.2f}"]
        if has_paper:
            cells.append(" / ".join(f"{v:.1f}" for v in r.paper) if r.paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    rows_by = (
        f"`{', '.join(row_keys)}`" if row_keys else "one (only `seed` differs between the runs)"
    )
    lines.append(
        f"Rows: {rows_by}. Cells: test mAP (%), mean ± sample std (ddof 1) "
        "over the seeds listed; average: mean of the columns. No detection: the seeds "
        "whose run has no detection at all (an empty results.json); they count as 0 in "
        "the means."
    )
    lines.append("")
    lines.append(f"- ours, by average: {_ranking(rows, avg)}")
    for t in (0.5,) if 0.5 in tious else ():
        lines.append(f"- ours, by mAP@0.5: {_ranking(rows, {r.key: r.mean[t] for r in rows})}")
    paper_rows = [r for r in rows if r.paper]
    if len(paper_rows) > 1:
        pavg = {r.key: mean(r.paper) for r in paper_rows}
        lines.append(f"- paper, by average of its 5 columns: {_ranking(paper_rows, pavg)}")

    seeds = sorted({s for r in rows for s in r.seeds})
    lines += ["", "Average test mAP (%) of each run, by seed:", ""]
    lines.append("| row | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    lines.append("|" + "---|" * (len(seeds) + 1))
    for r in rows:
        by_seed = {run.seed: run for run in r.runs}
        cells = [
            "–"
            if s not in by_seed
            else f"{by_seed[s].average:.2f}"
            + (" (no detection)" if by_seed[s].detections == 0 else "")
            for s in seeds
        ]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    lines += _train_fit_lines(rows, seeds)

    if pairs:
        ref_label = next(r.label for r in rows if r.key == reference)
        lines += [
            "",
            f"Paired with {ref_label}, seed by seed: Δ = row − reference in points of "
            "mAP (%), its mean over the paired seeds and two 95% intervals for it: "
            f"paired t, and a percentile bootstrap over seeds ({resamples} resamples, "
            f"numpy default_rng({seed})). better / worse: the row's t interval lies "
            "above / below 0 (the row beats / trails the reference); else not resolved.",
            "",
            "| row | paired seeds | Δ average | t 95% | bootstrap 95% | verdict "
            "| Δ mAP@0.5 | t 95% | bootstrap 95% | verdict |",
            "|" + "---|" * 10,
        ]
        by_row: dict[str, dict[str, Paired]] = {}
        for pr in pairs:
            by_row.setdefault(pr.key, {})[pr.measure] = pr
        for measures in by_row.values():
            first = next(iter(measures.values()))
            cells = [first.label, ",".join(map(str, first.seeds))]
            for measure in ("average", "mAP@0.5"):
                pr = measures.get(measure)
                cells += (
                    ["–"] * 4
                    if pr is None
                    else [f"{pr.mean:+.2f}", _interval(pr.t), _interval(pr.bootstrap), pr.verdict]
                )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(table: Table) -> dict[str, Any]:
    """The table's numbers for a program: the markdown's, unrounded (mAP in %; NaN, a
    std of one seed, becomes null in the file)."""
    tious, rows, row_keys, pairs = table.tious, table.rows, table.row_keys, table.pairs
    reference, resamples, seed = table.reference, table.resamples, table.seed

    def by_tiou(values: dict[float, float]) -> dict[str, float]:
        return {f"mAP@{t:g}": values[t] for t in tious}

    return {
        "row_keys": row_keys,
        "tiou_thresholds": tious,
        "rows": [
            {
                "key": r.key,
                "label": r.label,
                "seeds": list(r.seeds),
                "no_detection": list(r.empty_seeds),
                "mean": by_tiou(r.mean),
                "std": by_tiou(r.std),
                "average": mean(r.mean[t] for t in tious),
                "paper": list(r.paper) if r.paper else None,
                "runs": [
                    {
                        "seed": run.seed,
                        "folder": str(run.folder),
                        "mAP": by_tiou({t: 100.0 * m for t, m in run.maps.items()}),
                        "average": run.average,
                        "detections": run.detections,
                        "train_fit": run.train_fit,
                    }
                    for run in r.runs
                ],
            }
            for r in rows
        ],
        "reference": reference,
        "bootstrap": {"resamples": resamples, "seed": seed},
        "paired": [
            {
                "key": p.key,
                "label": p.label,
                "measure": p.measure,
                "seeds": list(p.seeds),
                "diffs": list(p.diffs),
                "mean": p.mean,
                "t_interval": list(p.t),
                "bootstrap_interval": list(p.bootstrap),
                "verdict": p.verdict,
            }
            for p in pairs or []
        ],
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="salad-aggregate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="MULTIRUN_DIR")
    p.add_argument(
        "--rows",
        default=None,
        help="config key(s), comma-separated (default: --paper's, else the swept keys)",
    )
    p.add_argument("--paper", choices=sorted(PAPER), default=None)
    p.add_argument(
        "--reference",
        default=None,
        help="the row the others are paired with, its key or label (default: SALAD's row "
        "of --paper; 'none' for no paired statistics)",
    )
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap's RNG")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--json", type=Path, default=None, help="also write its numbers here")
    p.add_argument("--title", default=None, help="a heading above the table")
    p.add_argument("--note", action="append", default=[], help="a line under the heading")
    p.add_argument(
        "--list",
        action="store_true",
        help="print row, seed, folder, average mAP, detections (or '-') per run",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keys = [k.strip() for k in (args.rows or "").split(",") if k.strip()]
    try:
        found = find_runs(args.run_dirs)
        if not keys and args.paper:
            keys = PAPER_ROWS[args.paper]
        named = not keys  # keys nobody typed: say which key each value belongs to
        keys = keys or swept_keys(found)
        runs = group_runs(found, keys, named=named)
        if args.list:
            for r in runs:
                dets = "-" if r.detections is None else str(r.detections)
                print(f"{r.row}\t{r.seed}\t{r.folder}\t{r.average:.2f}\t{dets}")
            return 0
        tious, rows = summarise(runs, args.paper)
        reference = args.reference or (REFERENCE.get(args.paper) if args.paper else None)
        reference = None if reference == "none" else reference
        pairs = None
        if reference is not None:
            pairs = paired(rows, reference, resamples=args.bootstrap, seed=args.bootstrap_seed)
            reference = next(r.key for r in rows if reference in (r.key, r.label))
    except AggregateError as e:
        print(f"salad-aggregate: {e}", file=sys.stderr)
        return 2
    table = Table(tious, rows, keys, pairs, reference, args.bootstrap, args.bootstrap_seed)
    text = to_markdown(table)
    head = ([f"# {args.title}", ""] if args.title else []) + [f"- {n}" for n in args.note]
    if head:
        text = "\n".join([*head, "", text])
    print(text, end="")
    if args.markdown:
        atomic_write_text(args.markdown, text)
    if args.json:
        atomic_write_json(args.json, to_json(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
