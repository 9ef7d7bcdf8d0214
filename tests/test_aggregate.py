"""salad-aggregate: the paper's tables byte for byte as experiments/aggregate.py made them
(at 7a27aaa, tests/data/aggregate/), the swept keys, its errors, and real sweeps."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _runcfg import REPO, TINY, run_cli
from salad_lightning import aggregate, sweeps

FIXTURES = Path(__file__).resolve().parent / "data" / "aggregate"
TIOU = [0.1, 0.2, 0.3, 0.4, 0.5]
SEEDS = [0, 1, 2, 3, 4]
EXPERIMENT = "experiment=thumos_shaped_regime"

# Every row of the fake tables: (folder, [its overrides], config changes, base in 0.01 %).
# The folders follow the table scripts (experiments/tables/*.sh): salad.sh's runs, one
# multirun per table or part, the fusion re-tests on three seeds only.
ROWS = [
    ("salad", ["ablation=salad"], {}, 3900),
    ("pruning/main", ["ablation=pruning_none"], {"pruning": "none"}, 3750),
    ("pruning/main", ["ablation=pruning_top1_iou"], {"pruning": "top1_iou"}, 3000),
    ("pruning/main", ["ablation=pruning_random"], {"pruning": "random"}, 3850),
    ("pruning/frozen", ["ablation=pruning_frozen", "model.frozen_alpha_path=alpha/seed${seed}.npz"],
     {"pruning": "frozen"}, 3300),
    ("target", ["ablation=target_max_score"], {"target": "max_score"}, 3100),
    ("target", ["ablation=target_score_gt_half"], {"target": "score_gt_half"}, 2800),
    ("target", ["ablation=target_iou_gt_mu"], {"target": "iou_gt_mu"}, 3850),
    ("fusion", ["mode=test", "model.postprocess.fusion=arithmetic"],
     {"fusion": "arithmetic"}, 4500),
    ("fusion", ["mode=test", "model.postprocess.fusion=geometric"], {"fusion": "geometric"}, 4300),
    ("fusion", ["mode=test", "model.postprocess.fusion=normalized_product"],
     {"fusion": "normalized_product"}, 4150),
    ("sensitivity/lambda1", ["model.loss.lambda1=0.5"], {"lambda1": 0.5}, 3800),
    ("sensitivity/lambda1", ["model.loss.lambda1=2.0"], {"lambda1": 2.0}, 3950),
    ("sensitivity/mu", ["model.loss.mu=0.3"], {"mu": 0.3}, 3600),
    ("sensitivity/mu", ["model.loss.mu=0.7"], {"mu": 0.7}, 4000),
]  # fmt: skip
SEED_EFFECT = [0, 120, -80, 60, -40]  # shared by the rows of a seed: the runs are paired
NO_DETECTION = {("score_gt_half", 1), ("score_gt_half", 2)}  # the collapse of target=p>0.5
NO_RESULTS_FILE = {("top1_iou", 3)}  # a run made before results.json was written


def _maps(i: int, seed: int, base: int) -> list[float]:
    """mAP per tIoU of row ``i`` and ``seed``: integers in 0.01 % divided once, so the
    floats (and the table made from them) are the same on every machine."""
    noise = ((seed * 7 + i * 13) % 11 - 5) * 15
    slope = 650 + 35 * (i % 5)  # mAP falls with the tIoU, at a rate of the row's own
    return [
        (base + SEED_EFFECT[seed] + noise + (2 - j) * slope + ((seed + 3 * j + i) % 5) * 10) / 1e4
        for j in range(len(TIOU))
    ]


def _write_run(
    job: Path,
    *,
    seed: int,
    overrides: list[str],
    changes: dict,
    maps: list[float],
    dets: int | None,
) -> None:
    """One job folder as a run writes it: metrics.json (test and val keys), results.json
    with ``dets`` detections (None: no file), config_resolved.yaml (with the keys that
    follow the seed and the folder, as the real one has) and Hydra's overrides.yaml."""
    (job / ".hydra").mkdir(parents=True)
    loss = {"lambda1": 1.0, "lambda2": 0.1, "mu": 0.5, "pruning": "salad", "target": "salad"}
    loss.update({k: v for k, v in changes.items() if k in loss})
    frozen = any(o.startswith("model.frozen_alpha_path=") for o in overrides)
    cfg = {
        "seed": seed,
        "mode": "test" if "mode=test" in overrides else "train",
        "paths": {"output_dir": str(job)},
        "dataset": {"tiou_thresholds": TIOU, "datamodule": {"seed": seed, "batch_size": 4}},
        "model": {
            "loss": loss,
            "postprocess": {"fusion": changes.get("fusion", "regression"), "nms": "soft"},
            "frozen_alpha_path": f"alpha/seed{seed}.npz" if frozen else None,
        },
        "trainer": {"max_epochs": 20, "default_root_dir": str(job)},
    }
    (job / "config_resolved.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    hydra = [EXPERIMENT, f"seed={seed}", *overrides, f"hydra.sweep.dir={job.parent}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(hydra))
    metrics = {"split": "test", "tiou_thresholds": TIOU}
    metrics.update({f"test/mAP@{t:g}": m for t, m in zip(TIOU, maps)})
    metrics["test/mAP"] = sum(maps) / len(maps)
    metrics["val"] = {"val/mAP": maps[2] / 2}
    (job / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if dets is not None:
        det = {"label": "BaseballPitch", "score": 0.5, "segment": [1.0, 2.5]}
        results = {
            "video_test_0000004": [det] * (dets // 2),
            "video_test_0000006": [det] * (dets - dets // 2),
        }
        (job / "results.json").write_text(json.dumps({"version": "x", "results": results}))


def write_table_runs(root: Path) -> None:
    """The run folders of the four tables under ``root`` (logs/tables/EXPERIMENT), in
    Hydra's multirun layout: job numbers seed-major within each folder, as
    ``-m seed=... ablation=a,b,c`` numbers them. Deterministic: the same bytes each time."""
    jobs: dict[str, int] = {}
    for seed in SEEDS:
        for i, (folder, overrides, changes, base) in enumerate(ROWS):
            if folder == "fusion" and seed > 2:
                continue
            num = jobs.get(folder, 0)
            jobs[folder] = num + 1
            name = next(iter(changes.values()), "salad")
            if (name, seed) in NO_DETECTION:
                dets, maps = 0, [0.0] * len(TIOU)
            else:
                dets = None if (name, seed) in NO_RESULTS_FILE else 7 + seed
                maps = _maps(i, seed, base)
            _write_run(
                root / folder / str(num), seed=seed, overrides=overrides, changes=changes,
                maps=maps, dets=dets,
            )  # fmt: skip
    for seed in SEEDS:  # mode=export_alpha writes no metrics: not a run of any table
        job = root / "pruning" / "alpha_export" / str(seed)
        job.mkdir(parents=True)
        (job / "config_resolved.yaml").write_text(f"seed: {seed}\n")


def _table(name: str, rows: str, title: str, *dirs: str) -> list[str]:
    """The arguments experiments/tables/_common.sh's ``table`` passes."""
    return [
        "salad", *dirs, "--rows", rows, "--paper", name, "--markdown", f"out/{name}.md",
        "--title", f"{title}, thumos_shaped_regime",
        "--note", f"command: `bash experiments/tables/{name}.sh`",
        "--note", "machine: 2 CPU cores (AMD EPYC), no GPU, torch 2.13.0+cpu",
        "--note", "code: commit 7a27aaa",
    ]  # fmt: skip


# fixture name -> the command's arguments, run in the folder of write_table_runs
SCENARIOS: dict[str, list[str]] = {
    "pruning.md": _table(
        "pruning", "model.loss.pruning", "Table 5: pruning (who regresses)",
        "pruning/main", "pruning/frozen",
    ),
    "target.md": _table("target", "model.loss.target", "Table 6: self-assessment target", "target"),
    "fusion.md": _table("fusion", "model.postprocess.fusion", "Table 7: score fusion", "fusion"),
    "sensitivity.md": _table(
        "sensitivity", "model.loss.lambda1,model.loss.lambda2,model.loss.mu",
        "Sensitivity to λ1, λ2, µ", "sensitivity/lambda1", "sensitivity/mu",
    ),
    # experiments/README.md's uses: another reference row, the pilot's table, --list
    "fusion_arithmetic.md": [
        "salad", "fusion", "--rows", "model.postprocess.fusion", "--paper", "fusion",
        "--reference", "arithmetic",
    ],
    "pilot.md": ["salad", "--rows", "model.loss.pruning", "--reference", "none"],
    "target_bootstrap.md": [
        "salad", "target", "--rows", "model.loss.target", "--reference", "salad",
        "--bootstrap", "500", "--bootstrap-seed", "3",
    ],
    "list.tsv": ["salad", "pruning", "--rows", "model.loss.pruning", "--list"],
}  # fmt: skip


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    write_table_runs(root)
    return root


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_tables_are_the_old_scripts_byte_for_byte(name, tables, monkeypatch, capsys):
    monkeypatch.chdir(tables)
    argv = SCENARIOS[name]
    assert aggregate.main(argv) == 0
    want = (FIXTURES / name).read_text(encoding="utf-8")
    assert capsys.readouterr().out == want
    if "--markdown" in argv:
        assert (tables / argv[argv.index("--markdown") + 1]).read_text(encoding="utf-8") == want


def test_the_table_scripts_make_the_same_tables(tmp_path):
    """experiments/tables/_common.sh's ``table``, as the table scripts call it, through
    ``python -m salad_lightning.aggregate``: the four tables, byte for byte."""
    tables = tmp_path / "experiments" / "tables"
    tables.mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "tables" / "_common.sh", tables)
    runs = tmp_path / "logs" / "tables" / "thumos_shaped_regime"
    write_table_runs(runs)
    script = [
        'source "$(dirname "$0")/_common.sh"',
        'machine() { echo "machine: 2 CPU cores (AMD EPYC), no GPU, torch 2.13.0+cpu"; }',
        'code_line() { echo "code: commit 7a27aaa"; }',
        # the fixtures' command lines: thumos_shaped_regime was then the default EXPERIMENT
        'command_line() { echo "command: \\`bash experiments/tables/$1.sh\\`"; }',
        'table pruning model.loss.pruning "Table 5: pruning (who regresses)" '
        '"$TABLES/pruning/main" "$TABLES/pruning/frozen" --',
        'table target model.loss.target "Table 6: self-assessment target" "$TABLES/target" --',
        'table fusion model.postprocess.fusion "Table 7: score fusion" "$TABLES/fusion" --',
        "table sensitivity model.loss.lambda1,model.loss.lambda2,model.loss.mu "
        '"Sensitivity to λ1, λ2, µ" "$TABLES/sensitivity/lambda1" "$TABLES/sensitivity/mu" --',
    ]
    (tables / "tables.sh").write_text("\n".join(script) + "\n")
    # the table's header from the defaults (EXPERIMENT, SEEDS, no MADE_BY), as the fixtures have
    env = {k: v for k, v in os.environ.items() if k not in ("EXPERIMENT", "SEEDS", "MADE_BY")}
    res = subprocess.run(
        ["bash", str(tables / "tables.sh")], cwd=tmp_path, capture_output=True, text=True,
        env={**env, "PYTHON": sys.executable, "EXPERIMENT": "thumos_shaped_regime"}, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    results = tmp_path / "experiments" / "results" / "thumos_shaped_regime"
    names = ("pruning", "target", "fusion", "sensitivity")
    want = [(FIXTURES / f"{n}.md").read_text(encoding="utf-8") for n in names]
    assert res.stdout == "".join(want)
    for text in want:
        name = text.split("experiments/tables/", 1)[1].split(".sh", 1)[0]
        assert (results / f"{name}.md").read_text(encoding="utf-8") == text


def _test_maps(folder: Path) -> dict[float, float]:
    """Test mAP (%) per tIoU, read straight from a run's metrics.json."""
    metrics = json.loads((folder / "metrics.json").read_text())
    return {t: 100 * metrics[f"test/mAP@{t:g}"] for t in metrics["tiou_thresholds"]}


def _by_hand(folders: list[Path]) -> tuple[dict[float, float], dict[float, float]]:
    """Mean and sample std (n - 1) over the folders, per tIoU, in %."""
    maps = [_test_maps(f) for f in folders]
    n = len(maps)
    mean = {t: sum(m[t] for m in maps) / n for t in maps[0]}
    std = {t: math.sqrt(sum((m[t] - mean[t]) ** 2 for m in maps) / (n - 1)) for t in maps[0]}
    return mean, std


def _mu(folder: Path) -> float:
    return yaml.safe_load((folder / "config_resolved.yaml").read_text())["model"]["loss"]["mu"]


def _json_table(argv: list[str], tmp_path: Path, capsys) -> tuple[dict, str]:
    out = tmp_path / "table.json"
    assert aggregate.main([*argv, "--json", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_the_swept_keys_come_from_the_overrides(tables, tmp_path, capsys):
    # sensitivity/mu: -m seed=0..4 model.loss.mu=0.3,0.7 (+ experiment, hydra.sweep.dir)
    found = sweeps.find_runs([tables / "sensitivity" / "mu"])
    assert sweeps.swept_keys(found) == ["model.loss.mu"]
    table, printed = _json_table([str(tables / "sensitivity" / "mu")], tmp_path, capsys)
    assert table["row_keys"] == ["model.loss.mu"]
    assert [r["key"] for r in table["rows"]] == ["model.loss.mu=0.3", "model.loss.mu=0.7"]
    # mu = 0.3 is the sweep's jobs 0, 2, 4, 6, 8 (seed-major, as Hydra numbers them)
    folders = [tables / "sensitivity" / "mu" / str(j) for j in (0, 2, 4, 6, 8)]
    assert {_mu(f) for f in folders} == {0.3}
    mean, std = _by_hand(folders)
    row = table["rows"][0]
    assert row["seeds"] == SEEDS
    for t in TIOU:
        assert row["mean"][f"mAP@{t:g}"] == pytest.approx(mean[t], abs=1e-9)
        assert row["std"][f"mAP@{t:g}"] == pytest.approx(std[t], abs=1e-9)
    assert row["average"] == pytest.approx(sum(mean.values()) / len(TIOU), abs=1e-9)
    cell = f"{mean[0.1]:.2f} ± {std[0.1]:.2f}"
    assert f"| model.loss.mu=0.3 | 0,1,2,3,4 | – | {cell} |" in printed
    assert "Rows: `model.loss.mu`." in printed and "Paired with" not in printed
    # the same sweep made elsewhere (paths.root_dir: where files go) is the same rows
    shutil.copytree(tables / "sensitivity" / "mu", tmp_path / "mu")
    for path in (tmp_path / "mu").glob("*/.hydra/overrides.yaml"):
        path.write_text(path.read_text() + "- paths.root_dir=/elsewhere\n")
    found = sweeps.find_runs([tables / "sensitivity" / "mu", tmp_path / "mu"])
    assert found[-1].overrides["paths.root_dir"] == "/elsewhere"
    assert sweeps.swept_keys(found) == ["model.loss.mu"]


def test_without_overrides_the_swept_keys_come_from_the_resolved_configs(tables, tmp_path):
    # the resolved configs also differ in paths.output_dir, trainer.default_root_dir (the
    # run's folder) and dataset.datamodule.seed (the seed): none of them was swept
    for part in ("lambda1", "mu"):
        shutil.copytree(tables / "sensitivity" / part, tmp_path / part)
    for hydra in tmp_path.rglob(".hydra"):
        shutil.rmtree(hydra)
    found = sweeps.find_runs([tmp_path / "mu"])
    assert all(r.overrides is None for r in found)
    assert sweeps.swept_keys(found) == ["model.loss.mu"]
    both = sweeps.find_runs([tmp_path / "lambda1", tmp_path / "mu"])
    assert sweeps.swept_keys(both) == ["model.loss.lambda1", "model.loss.mu"]
    rows = sorted({r.row for r in sweeps.group_runs(both, sweeps.swept_keys(both), named=True)})
    assert rows == [
        "model.loss.lambda1=0.5,model.loss.mu=0.5",
        "model.loss.lambda1=1.0,model.loss.mu=0.3",
        "model.loss.lambda1=1.0,model.loss.mu=0.7",
        "model.loss.lambda1=2.0,model.loss.mu=0.5",
    ]


def test_a_sweep_over_seeds_only_is_one_row(tables, tmp_path, capsys):
    table, printed = _json_table([str(tables / "salad"), "--reference", "none"], tmp_path, capsys)
    assert table["row_keys"] == [] and [r["key"] for r in table["rows"]] == ["all runs"]
    mean, _ = _by_hand([tables / "salad" / str(s) for s in SEEDS])
    assert table["rows"][0]["mean"]["mAP@0.5"] == pytest.approx(mean[0.5], abs=1e-9)
    assert "Rows: one (only `seed` differs between the runs)." in printed


def _write_sweep(root: Path, settings: list[tuple[int, str]]) -> None:
    """Jobs of a multirun over ``model.loss.lambda1``: (seed, value as typed) each."""
    for job, (seed, typed) in enumerate(settings):
        maps = _maps(job, seed, 3000)
        _write_run(root / str(job), seed=seed, overrides=[f"model.loss.lambda1={typed}"],
                   changes={"lambda1": float(typed)}, maps=maps, dets=3)  # fmt: skip


def test_values_typed_two_ways_are_one_row_and_numbers_sort_as_numbers(tmp_path):
    _write_sweep(tmp_path / "a", [(0, "1"), (1, "1.0"), (0, "1e-3"), (1, "0.001")])
    found = sweeps.find_runs([tmp_path / "a"])
    assert sweeps.swept_keys(found) == ["model.loss.lambda1"]
    rows = [r.row for r in sweeps.load_runs([tmp_path / "a"])]
    assert rows == ["model.loss.lambda1=0.001"] * 2 + ["model.loss.lambda1=1.0"] * 2
    # 2.0 before 10.0 (text order would put "10.0" first)
    _write_sweep(tmp_path / "b", [(0, "10.0"), (0, "2.0")])
    _, rows = aggregate.summarise(sweeps.load_runs([tmp_path / "b"], ["model.loss.lambda1"]), None)
    assert [r.key for r in rows] == ["2.0", "10.0"]


def test_the_paper_table_needs_no_rows_option(tables, monkeypatch, capsys):
    monkeypatch.chdir(tables)
    argv = SCENARIOS["pruning.md"]
    i = argv.index("--rows")
    assert aggregate.main(argv[:i] + argv[i + 2 :]) == 0
    assert capsys.readouterr().out == (FIXTURES / "pruning.md").read_text(encoding="utf-8")


def test_a_reference_row_by_its_label_and_the_json_pairs(tables, tmp_path, capsys):
    mu = tables / "sensitivity" / "mu"
    table, printed = _json_table([str(mu), "--reference", "model.loss.mu=0.3"], tmp_path, capsys)
    assert table["reference"] == "model.loss.mu=0.3"
    avg, at05 = table["paired"]
    assert (avg["key"], avg["measure"]) == ("model.loss.mu=0.7", "average")
    assert (at05["key"], at05["measure"]) == ("model.loss.mu=0.7", "mAP@0.5")
    # seed s: job 2s has mu = 0.3, job 2s + 1 mu = 0.7
    diffs = []
    for s in SEEDS:
        low, high = _test_maps(mu / str(2 * s)), _test_maps(mu / str(2 * s + 1))
        diffs.append(sum(high.values()) / len(high) - sum(low.values()) / len(low))
    assert avg["diffs"] == pytest.approx(diffs, abs=1e-9)
    assert avg["mean"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-9)
    assert at05["seeds"] == SEEDS
    line = printed.splitlines()[-1]  # the paired table's row
    assert line.startswith("| model.loss.mu=0.7 | 0,1,2,3,4 | ")
    assert f" | {avg['mean']:+.2f} | " in line and line.endswith(f" | {at05['verdict']} |")
    # a paper row by its label, as printed
    argv = [str(tables / "salad"), str(tables / "pruning"), "--paper", "pruning"]
    table, _ = _json_table([*argv, "--reference", "No pruning"], tmp_path, capsys)
    assert table["reference"] == "none"
    assert {p["key"] for p in table["paired"]} == {"salad", "top1_iou", "random", "frozen"}


def _fails(argv: list[str], capsys) -> str:
    assert aggregate.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_errors_name_the_folder_the_key_or_the_row(tables, tmp_path, capsys):
    # a folder with no run: the alpha exports have no metrics.json; an empty folder
    err = _fails([str(tables / "salad"), str(tables / "pruning" / "alpha_export")], capsys)
    assert f"{tables / 'pruning' / 'alpha_export'} holds no finished test run" in err
    (tmp_path / "empty").mkdir()
    assert "holds no finished test run" in _fails([str(tmp_path / "empty")], capsys)
    assert "does not exist" in _fails([str(tmp_path / "nowhere")], capsys)
    # a stale folder: two runs of one row with one seed
    shutil.copytree(tables / "sensitivity" / "mu", tmp_path / "mu")
    shutil.copytree(tmp_path / "mu" / "1", tmp_path / "mu" / "old")
    err = _fails([str(tmp_path / "mu")], capsys)
    assert "row 'model.loss.mu=0.7' seed 0 has two runs" in err
    assert str(tmp_path / "mu" / "1") in err and str(tmp_path / "mu" / "old") in err
    shutil.rmtree(tmp_path / "mu" / "old")
    # runs scored at different tIoU thresholds
    metrics_path = tmp_path / "mu" / "3" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["test/mAP@0.7"] = metrics.pop("test/mAP@0.5")
    metrics_path.write_text(json.dumps(metrics))
    err = _fails([str(tmp_path / "mu")], capsys)
    assert "different tIoU thresholds" in err and str(tmp_path / "mu" / "3") in err
    assert "[0.1, 0.2, 0.3, 0.4, 0.7]" in err
    # an unknown --rows key: the key, and the keys there are where it goes wrong
    err = _fails([str(tables / "salad"), "--rows", "model.loss.nu"], capsys)
    assert "has no key 'model.loss.nu'" in err
    assert "model.loss has: lambda1, lambda2, mu, pruning, target" in err
    # an unknown --reference row: the rows there are
    err = _fails([str(tables / "sensitivity" / "mu"), "--reference", "mu=0.5"], capsys)
    rows = "model.loss.mu=0.3; model.loss.mu=0.7"
    assert f"reference row 'mu=0.5' is not among the rows: {rows}" in err


def test_the_command_imports_no_torch(tables):
    # salad-aggregate starts fast: numpy and yaml only
    code = (
        "import sys; from salad_lightning.aggregate import main; "
        f"rc = main([{str(tables / 'salad')!r}, '--list']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(res.stdout.splitlines()) == len(SEEDS)


# A sweep of the default run, tiny: 4 epochs at a higher learning rate give each seed a
# non-zero test mAP of its own at most thresholds (1 epoch gives 0.00 almost everywhere),
# so that a wrong mean could show; a few seconds a job.
FAST = [*TINY, "trainer.max_epochs=4", "model.optimizer.lr=0.01", "num_timeline_plots=0"]


def _sweep(tmp_path: Path, overrides: list[str]) -> Path:
    res = run_cli(["-m", *overrides, *FAST, f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    return sweep


def _salad_aggregate(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "salad_lightning.aggregate", *argv],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow
def test_a_seed_sweep_of_the_default_run(tmp_path):
    sweep = _sweep(tmp_path, ["seed=0,1,2"])
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    res = _salad_aggregate(str(sweep), "--json", str(tmp_path / "table.json"))
    assert res.returncode == 0, res.stderr
    (row,) = json.loads((tmp_path / "table.json").read_text())["rows"]
    mean, std = _by_hand(jobs)
    assert any(m > 0 for m in mean.values())  # the check below can fail
    assert row["label"] == "all runs" and row["seeds"] == [0, 1, 2]
    tious = json.loads((jobs[0] / "metrics.json").read_text())["tiou_thresholds"]
    assert list(row["mean"]) == [f"mAP@{t:g}" for t in tious]
    for t in tious:
        assert row["mean"][f"mAP@{t:g}"] == pytest.approx(mean[t], abs=1e-9)
        assert row["std"][f"mAP@{t:g}"] == pytest.approx(std[t], abs=1e-9)
    cells = " | ".join(f"{mean[t]:.2f} ± {std[t]:.2f}" for t in tious)
    average = sum(mean.values()) / len(mean)
    assert f"| all runs | 0,1,2 | – | {cells} | {average:.2f} |" in res.stdout.splitlines()


@pytest.mark.slow
def test_a_sweep_over_seeds_and_mu_gives_a_row_per_mu(tmp_path):
    sweep = _sweep(tmp_path, ["seed=0,1", "model.loss.mu=0.3,0.5"])
    # the multirun: one finished job per combination, each with its values
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    assert all((j / "metrics.json").is_file() for j in jobs)
    seen = {
        (yaml.safe_load((j / "config_resolved.yaml").read_text())["seed"], _mu(j)) for j in jobs
    }
    assert seen == {(0, 0.3), (0, 0.5), (1, 0.3), (1, 0.5)}
    out = tmp_path / "t.json"
    res = _salad_aggregate(str(sweep), "--reference", "model.loss.mu=0.5", "--json", str(out))
    assert res.returncode == 0, res.stderr
    table = json.loads(out.read_text())
    assert table["row_keys"] == ["model.loss.mu"]
    assert [r["label"] for r in table["rows"]] == ["model.loss.mu=0.3", "model.loss.mu=0.5"]
    for row in table["rows"]:
        mu = float(row["label"].split("=")[1])
        mine = [j for j in jobs if _mu(j) == mu]
        mean, _ = _by_hand(mine)
        assert row["seeds"] == [0, 1] and len(mine) == 2
        assert row["mean"] == pytest.approx({f"mAP@{t:g}": m for t, m in mean.items()}, abs=1e-9)
    assert table["reference"] == "model.loss.mu=0.5"
    assert [p["key"] for p in table["paired"]] == ["model.loss.mu=0.3"] * 2
    assert "Paired with model.loss.mu=0.5, seed by seed" in res.stdout


def test_the_ranking_names_a_class_path_row_by_its_class():
    """Rows keyed by ``model._target_`` (Table 2: SALAD, SALAD + P-GCN) are ranked by class
    name; numbers, sweeps of several keys and other values as they are."""
    rows = [
        sweeps.Row(key=k, label=k, seeds=(0,), mean={}, std={}, paper=None)
        for k in (
            "salad_lightning.lit_module.SaladLitModule",
            "salad_lightning.pgcn.module.PGCNLitModule",
            "0.5,0.1",
            "model.loss.mu=0.3",
            "normalized_product",
        )
    ]
    values = {r.key: v for r, v in zip(rows, (44.33, 73.52, 40.0, 39.0, 41.83))}
    assert aggregate._ranking(rows, values) == (
        "PGCNLitModule (73.52) > SaladLitModule (44.33) > normalized_product (41.83) > "
        "0.5,0.1 (40.00) > model.loss.mu=0.3 (39.00)"
    )
