"""One ablation table from run folders: mean ± std over seeds, next to the paper's numbers,
and each row's paired difference from the reference row (SALAD) seed by seed.

    python experiments/aggregate.py RUN_DIR [RUN_DIR ...] --rows KEY[,KEY...] \\
        [--paper pruning|target|fusion|sensitivity] [--reference ROW] \\
        [--bootstrap 10000] [--bootstrap-seed 0] [--markdown OUT.md] [--list]

Every folder under the RUN_DIRs that holds both ``metrics.json`` (with test keys) and
``config_resolved.yaml`` is one run. Runs are grouped by the value of the config
key(s) ``--rows`` (dotted paths into the resolved config, e.g. ``model.loss.pruning``)
and, inside a row, told apart by ``seed``; two runs of one row with the same seed are
an error (a stale folder). Each cell is the mean ± sample standard deviation
(ddof 1) over seeds of ``test/mAP@t`` in %, for the tIoU thresholds of the runs.

``--paper`` names one of the paper's tables (Tables 5-7 of SALAD, WACV 2021): its
rows come first, in the paper's order and with the paper's labels and numbers;
rows the paper does not have follow, sorted. ``--list`` prints, per run,
``row<TAB>seed<TAB>folder<TAB>average test mAP (%)<TAB>detections`` instead of the
table.

**Runs with no detection.** Each run's ``results.json`` (the detections it was
scored on) is read and its detections counted. A run with none scores 0 at every
tIoU; it stays in the means (it is what the method gave) but its seed is listed in
the table's "no detection" column, so a low mean never hides an empty run silently.

**Paired differences.** With a reference row (``--reference``, by default SALAD's
row of the ``--paper`` table), every other row gets, on the seeds it shares with
the reference, the per-seed difference ``d_s = row_s - reference_s`` of the
average over the tIoU columns and of mAP@0.5 (in points of %), their mean, and two
95% intervals for the mean difference: the paired t interval
``mean ± t(0.975, n-1) · sd / sqrt(n)`` and a percentile bootstrap over seeds
(``--bootstrap`` resamples of the n differences with replacement, drawn with
``numpy.random.default_rng(--bootstrap-seed)``). The row is "better" (than the
reference) when the t interval lies above 0, "worse" when it lies below 0, and
"not resolved" otherwise (or with fewer than 2 paired seeds); where the bootstrap
interval says otherwise, the verdict notes it. The Student t quantile is computed
here (:func:`t_quantile`, exact for integer degrees of freedom), with no scipy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import numpy as np
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


# The row every other row is compared with, seed by seed, per --paper table.
REFERENCE = {
    "pruning": "salad",
    "target": "salad",
    "fusion": "regression",
    "sensitivity": "1.0,0.1,0.5",
}


@dataclass(frozen=True)
class Run:
    row: str
    seed: int
    folder: Path
    maps: dict[float, float]  # tIoU -> test mAP (fraction)
    detections: int | None = None  # in results.json; None when the file is missing

    @property
    def average(self) -> float:
        """Mean over the tIoU columns, in %."""
        return 100.0 * mean(self.maps.values())


def count_detections(folder: Path) -> int | None:
    """Detections in ``folder/results.json`` (ActivityNet format), None if there is none."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text()).get("results", {})
    return sum(len(dets) for dets in results.values())


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
                float(k.split("@", 1)[1]): math.nan if v is None else float(v)  # null: NaN
                for k, v in metrics.items()
                if k.startswith("test/mAP@")
            }
            if not maps:  # a validate-only run
                continue
            cfg = yaml.safe_load(cfg_path.read_text())
            row = ",".join(_fmt_value(_lookup(cfg, k, cfg_path)) for k in row_keys)
            runs.append(Run(row, int(cfg["seed"]), folder, maps, count_detections(folder)))
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
    runs: tuple[Run, ...] = ()

    @property
    def empty_seeds(self) -> tuple[int, ...]:
        """Seeds whose run has no detection at all."""
        return tuple(r.seed for r in self.runs if r.detections == 0)


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
        seeds = tuple(r.seed for r in group)
        rows.append(Row(key, label, seeds, mean_, std_, numbers, tuple(group)))
    return tious, rows


# --- paired statistics -------------------------------------------------------------


def t_cdf(t: float, df: int) -> float:
    """Student t distribution function for an integer ``df >= 1``, in closed form.

    With ``θ = atan(t / sqrt(df))`` and ``c = cos θ`` (Abramowitz & Stegun 26.7.3-4),
    ``A = P(-t < T < t)`` is ``(2/π)(θ + sin θ c (1 + (2/3)c² + (2·4)/(3·5)c⁴ + ...
    + (2·4···(df-3))/(3·5···(df-2)) c^(df-3)))`` for odd df (``2θ/π`` for df = 1) and
    ``sin θ (1 + (1/2)c² + (1·3)/(2·4)c⁴ + ... + (1·3···(df-3))/(2·4···(df-2)) c^(df-2))``
    for even df; ``A`` is odd in t and the distribution function is ``(1 + A) / 2``.
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, found {df}")
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2:
        for j in range(1, (df - 3) // 2 + 1):
            term *= 2 * j / (2 * j + 1) * c2
            total += term
        inner = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        a = 2.0 / math.pi * (theta + inner)
    else:
        for j in range(1, (df - 2) // 2 + 1):
            term *= (2 * j - 1) / (2 * j) * c2
            total += term
        a = math.sin(theta) * total
    return 0.5 * (1.0 + a)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`t_cdf`, to about 1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), found {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Paired t interval of the mean of ``diffs``: ``mean ± t(1 - (1-level)/2, n-1) sd/sqrt(n)``
    (nan, nan with fewer than 2 values)."""
    n = len(diffs)
    if n < 2:
        return math.nan, math.nan
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * stdev(diffs) / math.sqrt(n)
    return mean(diffs) - half, mean(diffs) + half


def bootstrap_interval(
    diffs: list[float], *, resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``: ``resamples`` draws of n
    values with replacement from ``numpy.random.default_rng(seed)``, then the
    ``(1-level)/2`` and ``1-(1-level)/2`` quantiles (numpy's linear rule) of their
    means (nan, nan with fewer than 2 values or no resamples)."""
    n = len(diffs)
    if n < 2 or resamples < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    means = np.asarray(diffs, dtype=np.float64)[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def verdict(interval: tuple[float, float]) -> str:
    """ "better" when the interval lies above 0, "worse" below 0, else "not resolved"."""
    lo, hi = interval
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "not resolved"


@dataclass(frozen=True)
class Paired:
    """One row against the reference row, on the seeds both have."""

    key: str
    label: str
    seeds: tuple[int, ...]
    measure: str  # "average" or "mAP@0.5"
    diffs: tuple[float, ...]  # row - reference per seed, points of %
    mean: float
    t: tuple[float, float]
    bootstrap: tuple[float, float]

    @property
    def verdict(self) -> str:
        """The t interval's verdict; notes the bootstrap's where it differs."""
        by_t = verdict(self.t) if len(self.diffs) > 1 else "not resolved"
        by_boot = verdict(self.bootstrap) if len(self.diffs) > 1 else by_t
        return (
            by_t
            if by_boot == by_t or math.isnan(self.bootstrap[0])
            else (f"{by_t} (bootstrap: {by_boot})")
        )


def _measure(run: Run, measure: str) -> float:
    if measure == "average":
        return run.average
    return 100.0 * run.maps.get(float(measure.split("@", 1)[1]), math.nan)


def paired(
    rows: list[Row], reference: str, *, resamples: int = 10000, seed: int = 0
) -> list[Paired]:
    """Every non-reference row against ``reference``, on the average and on mAP@0.5."""
    by_key = {r.key: r for r in rows}
    if reference not in by_key:
        raise ValueError(f"reference row {reference!r} is not among the rows {sorted(by_key)}")
    ref = {run.seed: run for run in by_key[reference].runs}
    out = []
    for row in rows:
        if row.key == reference:
            continue
        runs = [run for run in row.runs if run.seed in ref]
        for measure in ("average", "mAP@0.5"):
            diffs = [_measure(run, measure) - _measure(ref[run.seed], measure) for run in runs]
            if not diffs or any(math.isnan(d) for d in diffs):
                continue
            out.append(
                Paired(
                    row.key,
                    row.label,
                    tuple(run.seed for run in runs),
                    measure,
                    tuple(diffs),
                    mean(diffs),
                    t_interval(diffs),
                    bootstrap_interval(diffs, resamples=resamples, seed=seed),
                )
            )
    return out


def _cell(m: float, s: float) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def _ranking(rows: list[Row], values: dict[str, float]) -> str:
    ranked = sorted(rows, key=lambda r: (-values[r.key], r.key))
    return " > ".join(f"{r.key} ({values[r.key]:.2f})" for r in ranked)


def _empty_cell(row: Row) -> str:
    cell = ",".join(map(str, row.empty_seeds)) or "–"
    unknown = [r.seed for r in row.runs if r.detections is None]
    if unknown:
        cell += f" (no results.json: {','.join(map(str, unknown))})"
    return cell


def _interval(iv: tuple[float, float]) -> str:
    return "–" if math.isnan(iv[0]) else f"[{iv[0]:+.2f}, {iv[1]:+.2f}]"


def to_markdown(
    tious: list[float],
    rows: list[Row],
    row_keys: list[str],
    pairs: list[Paired] | None = None,
    *,
    reference: str | None = None,
    resamples: int = 10000,
    seed: int = 0,
) -> str:
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
    lines.append(
        f"Rows: `{', '.join(row_keys)}`. Cells: test mAP (%), mean ± sample std (ddof 1) "
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--rows", required=True, help="config key(s), comma-separated")
    p.add_argument("--paper", choices=sorted(PAPER), default=None)
    p.add_argument(
        "--reference",
        default=None,
        help="the row the others are paired with (default: SALAD's row of --paper; "
        "'none' for no paired statistics)",
    )
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap's RNG")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--title", default=None, help="a heading above the table")
    p.add_argument("--note", action="append", default=[], help="a line under the heading")
    p.add_argument(
        "--list",
        action="store_true",
        help="print row, seed, folder, average mAP, detections (or '-') per run",
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
            dets = "-" if r.detections is None else str(r.detections)
            print(f"{r.row}\t{r.seed}\t{r.folder}\t{r.average:.2f}\t{dets}")
        return 0
    tious, rows = summarise(runs, args.paper)
    reference = args.reference or (REFERENCE.get(args.paper) if args.paper else None)
    if reference == "none":
        reference = None
    pairs = None
    if reference is not None:
        try:
            pairs = paired(rows, reference, resamples=args.bootstrap, seed=args.bootstrap_seed)
        except ValueError as e:
            print(f"aggregate.py: {e}", file=sys.stderr)
            return 2
    text = to_markdown(
        tious,
        rows,
        keys,
        pairs,
        reference=reference,
        resamples=args.bootstrap,
        seed=args.bootstrap_seed,
    )
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
