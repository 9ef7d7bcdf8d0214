"""pgcn/proposals.py: the proposals file round trip and the reader's messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from salad_lightning.pgcn.proposals import (
    PROPOSALS_VERSION,
    ProposalsFileError,
    VideoProposals,
    file_sha256,
    read_proposals,
    write_proposals,
)

MADE_BY = {
    "checkpoint": "runs/x/checkpoints/last.ckpt",
    "checkpoint_sha256": "0" * 64,
    "dataset": "thumos14",
    "annotation_file": "data/thumos14/annotations.json",
    "settings": {"postprocess": "soft_nms", "max_segments": 800},
}


def test_round_trip_is_exact_and_sorted(tmp_path):
    rng = np.random.default_rng(0)
    seg = np.sort(rng.uniform(0, 200, size=(50, 2)), axis=1)
    score = rng.random(50)
    score[[3, 7, 9]] = 0.5  # ties keep their order
    props = {
        "video_b": VideoProposals("video_b", seg, score),
        "video_a": VideoProposals("video_a", np.zeros((0, 2)), np.zeros(0)),
    }
    path = write_proposals(tmp_path / "proposals.json", props, MADE_BY)
    read, made_by = read_proposals(path)
    assert made_by == MADE_BY
    assert list(read) == ["video_b", "video_a"]
    order = np.argsort(-score, kind="stable")
    np.testing.assert_array_equal(read["video_b"].segments, seg[order])  # bit for bit
    np.testing.assert_array_equal(read["video_b"].scores, score[order])
    assert (np.diff(read["video_b"].scores) <= 0).all()
    tied = [j for j in order if score[j] == 0.5]
    assert tied == [3, 7, 9]
    assert len(read["video_a"]) == 0 and read["video_a"].segments.shape == (0, 2)
    assert json.loads(path.read_text())["version"] == PROPOSALS_VERSION
    top = read["video_b"].top(5)
    np.testing.assert_array_equal(top.scores, score[order][:5])


def _write(tmp_path, results, **extra):
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps({"version": PROPOSALS_VERSION, "made_by": MADE_BY, "results": results, **extra})
    )
    return path


@pytest.mark.parametrize(
    "item,message",
    [
        ({"score": 0.5}, 'expected "score" and "segment"'),
        ({"score": 0.5, "segment": [1.0]}, r'"segment" must be \[start, end\]'),
        ({"score": 0.5, "segment": ["1", 2.0]}, r'"segment" must be \[start, end\]'),
        ({"score": 0.5, "segment": [3.0, 1.0]}, "start <= end"),
        ({"score": 0.5, "segment": [float("nan"), 1.0]}, "finite numbers"),
        ({"score": float("inf"), "segment": [0.0, 1.0]}, '"score" must be a finite number'),
        ({"score": True, "segment": [0.0, 1.0]}, '"score" must be a finite number'),
    ],
)
def test_a_bad_proposal_is_named(tmp_path, item, message):
    results = {
        "v1": [{"score": 0.9, "segment": [0, 1]}],
        "v2": [{"score": 1, "segment": [2, 3]}, item],
    }
    path = _write(tmp_path, results)
    with pytest.raises(ProposalsFileError, match=message) as err:
        read_proposals(path)
    assert str(path) in str(err.value) and "video 'v2', proposal 1" in str(err.value)


def test_not_a_proposals_file(tmp_path):
    path = tmp_path / "results.json"  # an ActivityNet results file
    path.write_text(json.dumps({"version": "VERSION 1.3", "results": {}}))
    with pytest.raises(ProposalsFileError, match="not a proposals file.*'VERSION 1.3'"):
        read_proposals(path)
    path.write_text("{not json")
    with pytest.raises(ProposalsFileError, match="not valid JSON"):
        read_proposals(path)
    with pytest.raises(ProposalsFileError, match="cannot read"):
        read_proposals(tmp_path / "missing.json")
    with pytest.raises(ProposalsFileError, match="'v9': expected a list"):
        read_proposals(_write(tmp_path, {"v9": {"score": 1}}))
    with pytest.raises(ProposalsFileError, match='"made_by" object'):
        read_proposals(_write(tmp_path, {}, made_by=None))


def test_writing_checks_its_arguments(tmp_path):
    vp = VideoProposals("v", [[0.0, 1.0]], [0.3])
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        write_proposals(
            tmp_path / "p.json", {"v": vp}, {k: 1 for k in MADE_BY if k != "checkpoint_sha256"}
        )
    with pytest.raises(ValueError, match="VideoProposals of 'w'"):
        write_proposals(tmp_path / "p.json", {"w": vp}, MADE_BY)
    with pytest.raises(ValueError, match="video 'v': proposal 0"):
        VideoProposals("v", [[2.0, 1.0]], [0.3])
    with pytest.raises(ValueError, match=r"segments \(P, 2\)"):
        VideoProposals("v", [[0.0, 1.0, 2.0]], [0.3])


def test_file_sha256(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    # SHA-256("abc"), the FIPS 180-2 test vector
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
