"""SALAD + P-GCN through the real commands: a tiny SALAD run, its proposals
(`mode=proposals`), then `experiment=pgcn proposals=RUN` trains and tests P-GCN on that
run's data; its mAP equals the evaluation command's on its results.json; `mode=test`
of its checkpoint gives the same; a folder that is not a finished SALAD run, or whose
proposals are missing or were made for other data, is refused before any training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _runcfg import TINY, compose_cfg, run_cli
from salad_lightning import evaluate
from salad_lightning.pgcn.proposals import read_proposals
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow

TOP = ["proposal_top_k=60"]  # proposals per video, first and second stage


@pytest.fixture(scope="module")
def salad_run(tmp_path_factory) -> Path:
    """A finished tiny SALAD run with its proposals for train, val and test."""
    root = tmp_path_factory.mktemp("salad")
    # into root/run, its data where the command below finds it
    run_pipeline(
        compose_cfg(root, ["trainer.max_epochs=3", f"paths.cache_dir={root / 'data_cache'}"])
    )
    res = run_cli(
        [*TINY, f"paths.root_dir={root}", "mode=proposals", *TOP,
         f"ckpt_path={root}/run/checkpoints/last.ckpt", f"hydra.run.dir={root}/proposals_run"],
        cwd=root,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "proposals (test)" in res.stderr  # the progress bar
    return root / "run"


def test_proposals_are_class_agnostic_top_k_in_seconds_with_their_maker(salad_run):
    folder = salad_run / "proposals"
    assert sorted(p.name for p in folder.glob("*.json")) == ["test.json", "train.json", "val.json"]
    props, made_by = read_proposals(folder / "test.json")
    annotations = json.loads(
        (salad_run.parent / "data_cache" / "synthetic_tiny_seed0" / "annotations.json").read_text()
    )
    test_ids = {v for v, d in annotations["database"].items() if d["subset"] == "Test"}
    assert set(props) == test_ids
    assert made_by["checkpoint"] == str((salad_run / "checkpoints" / "last.ckpt").resolve())
    assert made_by["split"] == "test" and made_by["settings"]["max_segments"] == 60
    assert made_by["settings"]["class_agnostic"] and made_by["settings"]["fusion"] == "regression"
    for vid, p in props.items():
        duration = annotations["database"][vid]["duration"]
        assert 0 < len(p.scores) <= 60
        assert (p.segments[:, 0] >= 0).all() and (p.segments[:, 1] <= duration).all()
        assert (p.scores[:-1] >= p.scores[1:]).all()  # best first
    train, _ = read_proposals(folder / "train.json")
    val, _ = read_proposals(folder / "val.json")
    assert not set(train) & set(val) and len(train) + len(val) == 12  # synthetic_tiny's 12


def _pgcn(tmp_path: Path, salad_run: Path, extra: list[str] = ()):
    cfg = compose_cfg(
        tmp_path,
        ["experiment=pgcn", f"proposals={salad_run}", *TOP, "trainer.max_epochs=3",
         "datamodule.epoch_multiplier=2", *extra],
        tiny=False,
    )  # fmt: skip
    return cfg, run_pipeline(cfg)


def test_pgcn_trains_tests_and_its_map_is_the_commands(salad_run, tmp_path, caplog):
    caplog.set_level("INFO", logger="salad_lightning")
    cfg, summary = _pgcn(tmp_path, salad_run)
    out = Path(cfg.paths.output_dir)
    assert "test mAP (%)" in caplog.text
    for name in ("results.json", "per_class_ap.md", "metrics.json", "config_resolved.yaml"):
        assert (out / name).is_file(), name
    assert (out / "diagnosis" / "diagnosis.json").is_file()
    assert summary["train"]["train/mAP"] >= 0 and "val/mAP" in summary["val"]
    gt = salad_run.parent / "data_cache" / "synthetic_tiny_seed0" / "annotations.json"
    result, _ = evaluate.evaluate_files(str(gt), str(out / "results.json"), subset="Test")
    assert result["mAP"] == pytest.approx(
        [summary[f"test/mAP@{t}"] for t in (0.3, 0.4, 0.5, 0.6, 0.7)], abs=1e-12
    )
    assert summary["test/mAP"] > 0  # P-GCN detects something: the comparison can fail
    # the checkpoint keeps the training set's regression statistics: mode=test reproduces
    ckpt = out / "checkpoints" / "last.ckpt"
    test_cfg = compose_cfg(
        tmp_path / "test",
        ["experiment=pgcn", f"proposals={salad_run}", *TOP, "mode=test", f"ckpt_path={ckpt}"],
        tiny=False,
    )
    again = run_pipeline(test_cfg)
    assert again["test/mAP"] == pytest.approx(summary["test/mAP"], abs=1e-12)


def _refused(tmp_path: Path, run: Path, match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        _pgcn(tmp_path, run)
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any training


def test_a_folder_that_is_not_a_finished_run_is_refused(salad_run, tmp_path):
    _refused(tmp_path / "a", tmp_path / "nowhere", r"proposals=.*nowhere: no such run folder")
    half = tmp_path / "half"
    shutil.copytree(salad_run, half)
    (half / "metrics.json").unlink()
    _refused(tmp_path / "b", half, r"not a finished first-stage run \(no metrics.json\)")


def test_missing_proposals_are_named_with_the_command_that_writes_them(salad_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(salad_run, bare)
    shutil.rmtree(bare / "proposals")
    _refused(
        tmp_path / "a", bare, r"no proposals in .*bare/proposals; write them with .*mode=proposals"
    )
    (bare / "proposals").mkdir()
    shutil.copy(salad_run / "proposals" / "test.json", bare / "proposals" / "test.json")
    _refused(tmp_path / "b", bare, r"train.json: no proposals for the train split")


def test_proposals_made_for_other_data_or_by_another_run_are_refused(salad_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(salad_run, other)
    path = other / "proposals" / "train.json"
    doc = json.loads(path.read_text())
    doc["made_by"]["checkpoint"] = str((other / "checkpoints" / "last.ckpt").resolve())
    doc["made_by"]["annotation_file"] = "/data/thumos/annotations/thumos14.json"
    path.write_text(json.dumps(doc))
    _refused(
        tmp_path / "a",
        other,
        r"made for the annotation file /data/thumos/.* but this run's data is",
    )
    # copied with its folder, the proposals still name the original run's checkpoint
    moved = tmp_path / "moved"
    shutil.copytree(salad_run, moved)
    _refused(
        tmp_path / "b", moved, r"made from the checkpoint .*/run/checkpoints/last.ckpt, not one of"
    )
