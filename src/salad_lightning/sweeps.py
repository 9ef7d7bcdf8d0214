"""A sweep's finished runs: found on disk and grouped into rows by what was swept
(the rows' paired comparison: `salad_lightning.paired`).

A run is a folder with ``config_resolved.yaml`` and a ``metrics.json`` with test keys.
The swept keys are read from Hydra's ``.hydra/overrides.yaml`` where every run has it:
the resolved configs also differ in what follows the seed or the folder (output paths,
the loaders' seed), which nobody swept. numpy and yaml only, so that ``salad-aggregate``
starts fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on big configs
_MISSING = object()


class AggregateError(ValueError):
    """A problem with the run folders or the options, worded for the user."""


@dataclass(frozen=True)
class Run:
    """One finished test run; its ``row`` is set when the runs are grouped (:func:`group_runs`)."""

    row: str
    seed: int
    folder: Path
    maps: dict[float, float]  # tIoU -> test mAP (fraction; NaN where metrics.json has null)
    detections: int | None = None  # in results.json; None when the file is missing
    values: tuple[str, ...] = ()  # the row's value of each row key (its sort order)
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # key -> value as typed on the command line; None: no .hydra/overrides.yaml
    overrides: dict[str, str] | None = field(default=None, repr=False, compare=False)
    # the train fit of the tested weights (metrics.json's train/mAP, in %); None: not measured
    train_fit: float | None = None

    @property
    def average(self) -> float:
        """Mean over the tIoU columns, in %."""
        return 100.0 * mean(self.maps.values())


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


def count_detections(folder: Path) -> int | None:
    """Detections in ``folder/results.json`` (ActivityNet format), None if there is none."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text()).get("results", {})
    return sum(len(dets) for dets in results.values())


def _read_overrides(folder: Path) -> dict[str, str] | None:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    out = {}
    for item in yaml.load(path.read_text(), Loader=_LOADER) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value  # appended (+, ++) or deleted (~) keys are keys too
    return out


def find_runs(run_dirs: Sequence[Path]) -> list[Run]:
    """Every finished test run under each of ``run_dirs``; each folder must hold one."""
    found = []
    for root in run_dirs:
        if not root.is_dir():
            raise AggregateError(f"run folder {root} does not exist")
        here, untested = [], 0
        for metrics_path in sorted(root.rglob("metrics.json")):
            folder = metrics_path.parent
            cfg_path = folder / "config_resolved.yaml"
            if not cfg_path.is_file():
                continue
            metrics = json.loads(metrics_path.read_text())
            maps = {
                float(k.split("@", 1)[1]): math.nan if v is None else float(v)
                for k, v in metrics.items()
                if k.startswith("test/mAP@")
            }
            if not maps:  # a validate-only run, or one that did not test
                untested += 1
                continue
            cfg = yaml.load(cfg_path.read_text(), Loader=_LOADER)
            overrides = _read_overrides(folder)
            dets = count_detections(folder)
            fit = (metrics.get("train") or {}).get("train/mAP")
            fit = None if fit is None else 100.0 * float(fit)
            here.append(Run("", int(cfg["seed"]), folder, maps, dets, (), cfg, overrides, fit))
        if not here:
            raise AggregateError(
                f"{root} holds no finished test run: none of its folders has both "
                "config_resolved.yaml and a metrics.json with test/mAP@ keys"
                + (f" ({untested} metrics.json without test keys)" if untested else "")
            )
        found += here
    return found


def format_value(value: Any) -> str:
    """A row's value as text: numbers as floats, so that ``1`` and ``1.0`` are one row."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return f"{float(value)}" if is_number else str(value)


def _typed(text: str) -> Any:
    """An override's value as Hydra reads it (``1e-3`` is a number, ``null`` is None)."""
    try:
        value = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _lookup(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _choices(folder: Path) -> dict[str, Any]:
    """The config groups Hydra chose for the run (``ablation``, ``experiment``, ...)."""
    path = folder / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    hydra = yaml.load(path.read_text(), Loader=_LOADER) or {}
    return hydra.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}


def key_value(run: Run, key: str) -> str | None:
    """``key``'s value in ``run`` as a row shows it; None when the run has no such key.

    As the override typed it first: the resolved value can follow the seed
    (``model.frozen_alpha_path=alpha/seed${seed}.npz``), and a row is one setting over
    seeds. Then the resolved config, then the config group chosen (``ablation``)."""
    if run.overrides is not None and key in run.overrides:
        return format_value(_typed(run.overrides[key]))
    value = _lookup(run.config, key)
    if value is not _MISSING:
        return format_value(value)
    choice = _choices(run.folder).get(key, _MISSING)
    return None if choice is _MISSING else format_value(choice)


def _leaves(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def _names_folder(value: Any, folder: Path) -> bool:
    """Whether ``value`` is a path in ``folder`` (where the run was written: the folder may
    have been moved since, so by its name)."""
    return isinstance(value, str) and (
        value.rstrip("/").endswith(f"/{folder.name}") or f"/{folder.name}/" in value
    )


def _follows_the_run(runs: Sequence[Run], key: str) -> bool:
    """Whether ``key`` follows each run's seed or folder in every run (output paths, the
    loaders' seed): not a setting anybody swept."""
    values = [_lookup(r.config, key) for r in runs]
    return all(v == r.seed for v, r in zip(values, runs)) or all(
        _names_folder(v, r.folder) for v, r in zip(values, runs)
    )


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The keys whose values differ between ``runs``, in the order first met; not ``seed``.

    From the overrides where every run has them (what Hydra's ``-m`` set); else from the
    resolved configs, leaving out the keys that follow each run's seed or folder. Neither
    ``hydra.*`` nor ``paths.*`` (where files go, not what a run does) is a row key."""
    if all(r.overrides is not None for r in runs):
        candidates = [k for r in runs for k in r.overrides]
    else:
        candidates = [k for r in runs for k, _ in _leaves(r.config)]
        candidates = [k for k in dict.fromkeys(candidates) if not _follows_the_run(runs, k)]
    keys = [k for k in dict.fromkeys(candidates) if k != "seed"]
    keys = [k for k in keys if not k.startswith(("hydra.", "paths."))]
    return [k for k in keys if len({key_value(r, k) for r in runs}) > 1]


def _unknown_key(run: Run, key: str) -> str:
    parts, node, depth = key.split("."), run.config, 0
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), dict):
        node, depth = node[parts[depth]], depth + 1
    where = ".".join(parts[:depth]) or "its top level"
    groups = sorted(_choices(run.folder)) if depth == 0 else []
    return (
        f"{run.folder / 'config_resolved.yaml'} has no key {key!r} (nor have the run's "
        f"overrides or config groups); {where} has: {', '.join(sorted(map(str, node)))}"
        + (f"; config groups: {', '.join(groups)}" if groups else "")
    )


def row_order(values: tuple[str, ...]) -> tuple:
    """Sort order of a row: numbers as numbers (2.0 before 10.0), then text."""
    out = []
    for v in values:
        try:
            out.append((0, float(v), ""))
        except ValueError:
            out.append((1, 0.0, v))
    return tuple(out)


ALL_RUNS = "all runs"  # the row of a sweep over seeds only


def group_runs(found: Sequence[Run], row_keys: Sequence[str], *, named: bool = False) -> list[Run]:
    """``found`` as runs of rows (sorted by row, seed). A row is the runs' values of
    ``row_keys``: ``0.5,0.1`` (``named``: ``model.loss.lambda1=0.5,model.loss.lambda2=0.1``,
    for keys the user did not type); with no key, one row."""
    runs = []
    for f in found:
        values = tuple(key_value(f, k) for k in row_keys)
        if None in values and not named:
            raise AggregateError(_unknown_key(f, row_keys[values.index(None)]))
        values = tuple("–" if v is None else v for v in values)
        if named:
            row = ",".join(f"{k}={v}" for k, v in zip(row_keys, values)) or ALL_RUNS
        else:
            row = ",".join(values)
        runs.append(replace(f, row=row, values=values))
    seen: dict[tuple[str, int], Path] = {}
    for r in runs:
        if (r.row, r.seed) in seen:
            raise AggregateError(
                f"row {r.row!r} seed {r.seed} has two runs: {seen[(r.row, r.seed)]} and "
                f"{r.folder}; remove the stale one"
            )
        seen[(r.row, r.seed)] = r.folder
    for r in runs[1:]:
        if sorted(r.maps) != sorted(runs[0].maps):
            raise AggregateError(
                f"runs at different tIoU thresholds: {runs[0].folder} has "
                f"{sorted(runs[0].maps)}, {r.folder} has {sorted(r.maps)}; a table compares "
                "runs scored at the same thresholds"
            )
    return sorted(runs, key=lambda r: (row_order(r.values), r.row, r.seed, str(r.folder)))


def load_runs(run_dirs: Sequence[Path], row_keys: Sequence[str] | None = None) -> list[Run]:
    """Every finished test run under ``run_dirs`` as rows by ``row_keys`` (None: the keys
    the runs were swept over, rows named ``key=value``)."""
    found = find_runs(run_dirs)
    if row_keys is None:
        return group_runs(found, swept_keys(found), named=True)
    return group_runs(found, row_keys)
