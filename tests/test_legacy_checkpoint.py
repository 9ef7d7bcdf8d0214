"""A checkpoint written before the restructure of the training and evaluation code
(commit 8fa1360, tests/data/legacy_checkpoint/) still loads and tests to its mAP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _runcfg import compose_cfg
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow

LEGACY = Path(__file__).parent / "data" / "legacy_checkpoint"


def test_a_checkpoint_of_the_previous_version_tests_to_the_same_map(tmp_path):
    expected = json.loads((LEGACY / "expected.json").read_text())
    cfg = compose_cfg(
        tmp_path,
        [*expected["overrides"], "mode=test", f"ckpt_path={LEGACY / 'last.ckpt'}"],
        tiny=False,
    )
    summary = run_pipeline(cfg)
    for key, value in expected["test"].items():
        assert summary[key] == pytest.approx(value, abs=1e-7), key
    assert summary["test/mAP"] > 0.005  # a model that detects something: a real check
