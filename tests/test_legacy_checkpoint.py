"""Checkpoints written by earlier versions still load and test to their numbers.

- ``tests/data/legacy_checkpoint/``: commit 8fa1360, before the restructure of the
  training and evaluation code; its test mAP.
- ``tests/data/checkpoint_eb87e34/``: commit eb87e34, before the single evaluation store;
  its test metrics, per-class AP, DETAD's diagnosis and the detections per video of its
  results.json, as that version wrote them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _runcfg import compose_cfg
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"


def _test_checkpoint(tmp_path: Path, folder: Path) -> tuple[dict, dict]:
    expected = json.loads((folder / "expected.json").read_text())
    cfg = compose_cfg(
        tmp_path,
        [*expected["overrides"], "mode=test", f"ckpt_path={folder / 'last.ckpt'}"],
        tiny=False,
    )
    return expected, run_pipeline(cfg)


def _close(found, expected, where: str) -> None:
    """Equal JSON values, numbers to 1e-7 (another CPU may change the last digits)."""
    if isinstance(expected, dict):
        assert isinstance(found, dict) and found.keys() == expected.keys(), where
        for k in expected:
            _close(found[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for i, (a, b) in enumerate(zip(found, expected)):
            _close(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, abs=1e-7), where
    else:
        assert found == expected, where


def test_a_checkpoint_of_the_previous_version_tests_to_the_same_map(tmp_path):
    expected, summary = _test_checkpoint(tmp_path, DATA / "legacy_checkpoint")
    for key, value in expected["test"].items():
        assert summary[key] == pytest.approx(value, abs=1e-7), key
    assert summary["test/mAP"] > 0.005  # a model that detects something: a real check


def test_a_checkpoint_of_eb87e34_tests_to_the_same_results(tmp_path):
    expected, summary = _test_checkpoint(tmp_path, DATA / "checkpoint_eb87e34")
    _close(summary, expected["test"], "metrics")
    assert summary["test/mAP"] > 0.005
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())["results"]
    assert {k: len(v) for k, v in results.items()} == expected["detections_per_video"]
    _close(
        json.loads((run / "diagnosis" / "diagnosis.json").read_text()),
        expected["diagnosis"],
        "diagnosis",
    )
