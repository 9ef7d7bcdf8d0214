"""The extractor end to end: counts, slicing and scaling, failures, resuming, features.json.

Most tests use stand-in backbones that average each clip's channels, so that a feature's
value can be computed from the decoded frames by hand; one CLI run uses the I3D
architecture with random weights saved in the public port's format.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("av", reason="PyAV: pip install salad-lightning[video]")
pytest.importorskip("cv2", reason="OpenCV: pip install salad-lightning[video]")

from _literal_i3d import InceptionI3d as LiteralI3d  # noqa: E402
from _literal_i3d import randomise  # noqa: E402
from salad_lightning.data.mapping import TimeMapping  # noqa: E402
from salad_lightning.extract import (  # noqa: E402
    Backbone,
    BackboneSpec,
    FeatureGeometry,
    FeatureSettingsError,
    TVL1Options,
    VideoDecodeError,
    check_features_json,
    extract_folder,
    extract_video,
    geometry,
    num_slices,
    read_features_json,
)
from salad_lightning.extract.cli import main as cli_main  # noqa: E402
from salad_lightning.extract.flow import TVL1Flow, frames_with_flow  # noqa: E402
from salad_lightning.extract.geometry import SliceChunker, settings_mismatches  # noqa: E402
from salad_lightning.extract.video import ResampledVideo  # noqa: E402
from test_extract_video import square_frame, write_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST_FLOW = TVL1Options(scales=2, warps=2, outer_iterations=3)


class ClipMean(nn.Module):
    """(B, C, T, H, W) -> (B, C): each clip's channel means."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.calls, self.fail_on_call = 0, fail_on_call

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # as a user's Ctrl-C in the middle of a video
        return x.mean(dim=(2, 3, 4))


def stand_in(stream: str = "rgb", weights=None, **kwargs) -> Backbone:
    spec = BackboneSpec(f"mean_{stream}", stream, 3 if stream == "rgb" else 2, size=48, crop=48)
    return Backbone(spec, ClipMean(**kwargs), weights)


def expected_frames(n: int, rate) -> int:
    """Frames at 25 fps of n frames at ``rate``: every k with k / 25 < n / rate."""
    return math.ceil(Fraction(n) / Fraction(rate) * 25)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "cfr25.mp4", 40)  # 40 frames -> 2 slices
    write_video(root / "cfr30.mp4", 72, rate=30)  # 2.4 s -> 60 frames -> 3 slices (not 4)
    write_video(root / "ntsc.mkv", 50, rate=Fraction(30000, 1001))  # 1.668 s -> 42 -> 2
    return root


def test_one_feature_per_whole_slice_of_the_resampled_video(folder, tmp_path):
    report = extract_folder(folder, tmp_path, [stand_in()], workers=0, progress=False)
    assert sorted(report.done) == ["cfr25", "cfr30", "ntsc"] and not report.failed
    meta = read_features_json(tmp_path)
    for vid, n, rate in [("cfr25", 40, 25), ("cfr30", 72, 30), ("ntsc", 50, Fraction(30000, 1001))]:
        frames = expected_frames(n, rate)
        feats = np.load(tmp_path / f"{vid}.npy")
        assert feats.dtype == np.float32
        assert feats.shape == (num_slices(frames, window=16, stride=16), 3)
        record = meta["videos"][vid]
        assert (record["frames"], record["source_frames"], record["features"]) == (
            frames,
            n,
            len(feats),
        )
        assert record["duration"] == pytest.approx(n / float(rate), abs=1e-3)
        assert record["average_rate"] == pytest.approx(float(rate))
    assert [len(np.load(tmp_path / f"{v}.npy")) for v in ("cfr25", "cfr30", "ntsc")] == [2, 3, 2]


@pytest.mark.parametrize(("stride", "batch_size"), [(16, 2), (4, 3)])
def test_feature_i_is_frames_i_stride_to_plus_window_scaled_to_plus_minus_one(
    folder, stride, batch_size
):
    path = folder / "cfr30.mp4"
    feats, record = extract_video(
        path, [stand_in()], stride=stride, batch_size=batch_size, device="cpu"
    )
    frames = np.stack(list(ResampledVideo(path, fps=25, size=48, crop=48))).astype(np.float64)
    n = num_slices(len(frames), window=16, stride=stride)
    expected = np.stack(
        [frames[i * stride : i * stride + 16].mean(axis=(0, 1, 2)) for i in range(n)]
    )
    np.testing.assert_allclose(feats, expected / 255 * 2 - 1, atol=1e-5)
    assert record["features"] == n == len(feats)
    assert -1 <= feats.min() and feats.max() <= 1


def test_both_streams_rgb_first_then_flow_and_workers_agree(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "square.mp4", 20, frame=square_frame)  # right and down: 1 slice
    write_video(videos / "code.mp4", 40)  # 2 slices
    outs = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        report = extract_folder(
            videos, out, [stand_in("rgb"), stand_in("flow")], flow=FAST_FLOW,
            workers=workers, progress=False,
        )  # fmt: skip
        assert sorted(report.done) == ["code", "square"]
        outs[workers] = {v: np.load(out / f"{v}.npy") for v in report.done}
    for vid in ("code", "square"):
        np.testing.assert_array_equal(outs[0][vid], outs[2][vid])
    feats = outs[0]["square"]
    frames = list(ResampledVideo(videos / "square.mp4", fps=25, size=48, crop=48))
    pairs = list(frames_with_flow(frames, TVL1Flow(FAST_FLOW)))
    rgb = np.stack([p[0] for p in pairs]).astype(np.float64) / 255 * 2 - 1
    flow = np.stack([p[1] for p in pairs]).astype(np.float64)
    assert feats.shape == (1, 5) and outs[0]["code"].shape == (2, 5)
    for i in range(1):
        np.testing.assert_allclose(feats[i, :3], rgb[16 * i : 16 * i + 16].mean(axis=(0, 1, 2)), atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(feats[i, 3:], flow[16 * i : 16 * i + 16].mean(axis=(0, 1, 2)), atol=1e-6)  # fmt: skip
    assert (feats[:, 3] > 0).all() and (feats[:, 4] > 0).all()  # moving right and down
    assert read_features_json(tmp_path / "out0")["settings"]["flow"]["scales"] == 2


def test_the_command_names_the_videos_it_cannot_use_and_finishes_the_others(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    good = write_video(videos / "good.mp4", 20)  # 20 frames: one slice
    (videos / "notes.mp4").write_text("not a video\n")
    write_video(tmp_path / "whole.mp4", 20)
    data = (tmp_path / "whole.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    write_video(videos / "short.mp4", 10)  # 10 frames < one slice
    weights = tmp_path / "rgb_imagenet.pt"  # the port's format, random weights
    torch.save(randomise(LiteralI3d(in_channels=3)).state_dict(), weights)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "salad_lightning.extract", str(videos), str(out),
         "--streams", "rgb", "--rgb-weights", str(weights), "--workers", "0", "--device", "cpu",
         "--size", "193", "--crop", "193"],  # the smallest frames I3D takes: a faster test
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-3000:]
    assert "videos: 100%|" in run.stderr  # the bar over videos
    assert "3 failed" in run.stderr
    for name, reason in [
        ("notes.mp4", "cannot open as a video"),
        ("truncated.mp4", "cannot open as a video"),
        ("short.mp4", r"10 frames at 25 fps \(0.400 s\): shorter than one slice of 16 frames"),
    ]:
        assert re.search(f"failed: {re.escape(str(videos / name))}: {reason}", run.stderr)
    meta = read_features_json(out)
    assert sorted(meta["failed"]) == ["notes", "short", "truncated"]
    assert meta["failed"]["short"]["source"] == str((videos / "short.mp4").resolve())
    assert list(meta["videos"]) == ["good"]
    assert np.load(out / "good.npy").shape == (1, 1024)
    assert meta["settings"]["weights"]["rgb"] == {
        "path": str(weights.resolve()),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert meta["videos"]["good"]["source"] == str(good.resolve())
    assert not list(out.glob(".*"))  # no temporary file left


def test_a_second_run_skips_finished_videos_and_refuses_other_settings(folder, tmp_path):
    weights = {"path": "/models/rgb.pt", "sha256": "a" * 64}
    extract_folder(folder, tmp_path, [stand_in(weights=weights)], workers=0, progress=False)
    files = sorted(tmp_path.iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    moved = dict(weights, path="/elsewhere/rgb.pt")  # the same file, moved
    again = extract_folder(folder, tmp_path, [stand_in(weights=moved)], workers=0, progress=False)
    assert sorted(again.skipped) == ["cfr25", "cfr30", "ntsc"] and not again.done
    assert {p.name: p.stat().st_mtime_ns for p in sorted(tmp_path.iterdir())} == stamps

    cases = [
        (dict(stride=4), "stride: 16 in features.json, now 4"),
        (dict(fps=30), "fps: 25 in features.json, now 30"),
        (dict(size=64), "size: 48 in features.json, now 64"),
    ]
    for kwargs, message in cases:
        with pytest.raises(FeatureSettingsError, match=message):
            extract_folder(folder, tmp_path, [stand_in(weights=weights)], progress=False, **kwargs)
    other = dict(weights, sha256="b" * 64)
    with pytest.raises(FeatureSettingsError, match="weights.rgb.sha256: 'a{64}' in features"):
        extract_folder(folder, tmp_path, [stand_in(weights=other)], progress=False)
    with pytest.raises(FeatureSettingsError, match="(?s)models: .*streams: "):
        extract_folder(
            folder, tmp_path, [stand_in(weights=weights), stand_in("flow")], progress=False
        )
    assert {p.name: p.stat().st_mtime_ns for p in sorted(tmp_path.iterdir())} == stamps


def test_an_interrupted_run_keeps_the_finished_videos(folder, tmp_path):
    # cfr25 takes one forward (2 slices, batch 8), so the second call is inside cfr30
    with pytest.raises(KeyboardInterrupt):
        extract_folder(folder, tmp_path, [stand_in(fail_on_call=2)], workers=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfr25.npy", "features.json"]
    assert list(read_features_json(tmp_path)["videos"]) == ["cfr25"]
    report = extract_folder(folder, tmp_path, [stand_in()], workers=0, progress=False)
    assert report.skipped == ["cfr25"] and sorted(report.done) == ["cfr30", "ntsc"]


def test_features_json_gives_the_time_mapping_and_checks_settings(folder, tmp_path):
    extract_folder(folder, tmp_path, [stand_in()], stride=8, workers=0, progress=False)
    meta = read_features_json(tmp_path)
    geo = geometry(meta)
    assert geo == FeatureGeometry(fps=25.0, stride=8, window=16, feature_dim=3)
    duration = meta["videos"]["cfr30"]["duration"]
    assert geo.time_mapping(duration) == TimeMapping.from_clip(
        fps=25, stride=8, window=16, duration=duration
    )
    assert (
        geo.num_features(meta["videos"]["cfr30"]["frames"]) == meta["videos"]["cfr30"]["features"]
    )
    assert check_features_json(tmp_path, fps=25, stride=8, window=16, feature_dim=3) == meta
    with pytest.raises(FeatureSettingsError) as err:
        check_features_json(tmp_path, fps=30, stride=8, window=8, feature_dim=3)
    assert "fps: 25 in features.json, expected 30" in str(err.value)
    assert "window: 16 in features.json, expected 8" in str(err.value)
    assert "stride" not in str(err.value)
    with pytest.raises(FeatureSettingsError, match="no such file"):
        read_features_json(tmp_path / "nowhere")


def test_extract_video_names_a_bad_file(tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoDecodeError, match="bad.mkv: cannot open as a video"):
        extract_video(bad, [stand_in()], device="cpu")


def test_the_command_fails_before_work_without_weights_or_with_a_bad_argument(
    folder, tmp_path, capsys
):
    out = tmp_path / "out"
    assert cli_main([str(folder), str(out), "--rgb-weights", "x.pt"]) == 2
    assert "--flow-weights is required" in capsys.readouterr().err
    assert cli_main([str(folder), str(out), "--streams", "rgb", "--rgb-weights", str(tmp_path / "no.pt")]) == 2  # fmt: skip
    assert "no.pt: no such weights file" in capsys.readouterr().err
    assert cli_main([str(folder), str(out), "--backbone", "s3d", "--streams", "flow"]) == 2
    assert "RGB stream only" in capsys.readouterr().err
    assert not out.exists()


def test_slices_of_the_chunker_are_every_whole_slice_once():
    for n, window, stride, per in itertools.product(range(40), (1, 5, 16), (1, 4, 16, 20), (1, 3)):
        chunker = SliceChunker(window=window, stride=stride, slices_per_chunk=per)
        chunks = [c for c in map(chunker.push, range(n)) if c] + [chunker.flush()]
        slices = []
        for first, items in filter(None, chunks):
            assert first == len(slices) and len(items) <= (per - 1) * stride + window
            m = (len(items) - window) // stride + 1
            slices += [items[j * stride : j * stride + window] for j in range(m)]
        n_expected = num_slices(n, window=window, stride=stride)
        assert slices == [list(range(i * stride, i * stride + window)) for i in range(n_expected)]


def test_the_package_imports_without_video_libraries():
    code = (
        "import sys, salad_lightning.extract, salad_lightning.extract.cli; "
        "print('av' in sys.modules, 'cv2' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "False"]


def test_a_missing_video_library_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(ImportError, match=r"pip install salad-lightning\[video\]"):
        list(ResampledVideo(tmp_path / "any.mp4"))


def test_settings_mismatches_name_each_nested_key_and_the_absent_ones():
    found = {"fps": 25, "stride": 16, "flow": {"scales": 5}, "crop": "center",
             "weights": {"rgb": {"path": "/a/rgb.pt", "sha256": "a" * 8}}}  # fmt: skip
    expected = {"fps": 25.0, "stride": 16, "flow": {"scales": 3, "tau": 0.25},
                "weights": {"rgb": {"path": "/b/rgb.pt", "sha256": "a" * 8}}, "size": 224}  # fmt: skip
    assert settings_mismatches(found, expected) == [
        "crop: 'center' in features.json, now absent",
        "flow.scales: 5 in features.json, now 3",
        "flow.tau: absent in features.json, now 0.25",
        "size: absent in features.json, now 224",
    ]  # numbers by value (25 == 25.0); the weights' paths are not compared
