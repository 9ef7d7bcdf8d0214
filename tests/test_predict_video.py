"""Features from one's own videos, end to end: the data layer reads the geometry from
features.json, a checkpoint records which features it learnt on and refuses others, and
``mode=predict`` on a video extracts its features as the checkpoint's were made, then
writes results.json, detections.csv, subtitles and a timeline."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from _runcfg import compose_cfg, run_cli
from salad_lightning.data.annotations import DataWarning
from salad_lightning.data.datamodule import SaladDataModule
from salad_lightning.data.detections import VideoDetections
from salad_lightning.data.extracted import config_record, read_extracted, record_mismatches
from salad_lightning.pipeline import run as run_pipeline
from salad_lightning.reporting import (
    detections_csv,
    srt_cues,
    srt_text,
    srt_timestamp,
    subtitle_detections,
)

FPS, STRIDE, WINDOW, DIM = 25, 16, 16, 8


def _settings(**changes) -> dict:
    """features.json's settings as salad-extract writes them (I3D, RGB only)."""
    settings = {
        "backbone": "i3d",
        "streams": ["rgb"],
        "models": ["i3d_rgb"],
        "weights": {"rgb": {"path": "/models/rgb_imagenet.pt", "sha256": "a" * 64}},
        "fps": FPS,
        "fps_exact": str(FPS),
        "window": WINDOW,
        "stride": STRIDE,
        "size": 226,
        "crop": 224,
        "resize": "shorter side to 226 (bilinear), centre crop 224 x 224",
        "scaling": {"rgb": "x / 255 * 2 - 1"},
        "flow": None,
        "feature_dim": DIM,
        "stream_dims": [DIM],
    }
    settings.update(changes)
    return settings


def _steps(duration: float, fps: float = FPS, stride: int = STRIDE) -> int:
    return (math.ceil(duration * fps) - WINDOW) // stride + 1


def extracted_folder(folder: Path, durations: dict[str, float], **changes) -> Path:
    """A feature folder as salad-extract leaves it: one (T, D) .npy per video, T as the
    extractor makes it from the duration, and features.json. Steps inside
    ``[0.3, 0.7] * duration`` carry a signal (the "action")."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = _settings(**changes)
    rng = np.random.default_rng(len(durations))
    videos = {}
    for vid, duration in durations.items():
        n = _steps(duration, settings["fps"], settings["stride"])
        x = rng.normal(0, 0.3, (n, settings["feature_dim"])).astype(np.float32)
        x[int(0.3 * n) : int(0.7 * n) + 1, 0] += 3.0
        np.save(folder / f"{vid}.npy", x)
        videos[vid] = {"source": f"/videos/{vid}.mp4", "average_rate": 30.0,
                       "duration": duration, "source_frames": round(30 * duration),
                       "frames": math.ceil(duration * settings["fps"]), "features": n}  # fmt: skip
    meta = {"format": 1, "version": "0.1.0", "settings": settings, "videos": videos, "failed": {}}
    (folder / "features.json").write_text(json.dumps(meta))
    return folder


def annotation_file(path: Path, durations: dict[str, float], *, fps: float = 30.0) -> Path:
    """Each video's action over ``[0.3, 0.7] * duration``, "jump" or "throw" alternately;
    the source videos' ``fps``, which the mapping of extracted features must not use."""
    database = {
        vid: {"subset": "train", "duration": d, "fps": fps,
              "annotations": [{"label": ("jump", "throw")[i % 2], "segment": [0.3 * d, 0.7 * d]}]}
        for i, (vid, d) in enumerate(durations.items())
    }  # fmt: skip
    path.write_text(json.dumps({"database": database}))
    return path


DURATIONS = {f"clip{i}": 20.0 + 4 * i for i in range(6)}


@pytest.fixture
def extracted(tmp_path):
    root = tmp_path / "data"
    extracted_folder(root / "features", DURATIONS)
    annotation_file(root / "annotations.json", DURATIONS)
    return root


def _dm(root: Path, **kwargs) -> SaladDataModule:
    base = dict(
        annotation_file=str(root / "annotations.json"),
        feature_dir=str(root / "features"),
        train_subset="train",
        test_subset=None,
        val_holdout=0.0,
    )
    return SaladDataModule(**{**base, **kwargs})


# --- the data layer reads the geometry from features.json -------------------------------


def test_the_geometry_and_every_videos_fps_come_from_features_json(extracted):
    dm = _dm(extracted)  # nothing typed: no stride, window, fps or feature_dim
    assert dm.feature_dim == DIM
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert (ds.stride, ds.window, ds.default_fps, ds.source.feature_dim) == (16, 16, 25.0, DIM)
    # the annotation file says 30 fps (the source video's): the features are at 25
    for video, mapping in zip(ds.videos, ds.mappings):
        assert video.fps == 25.0
        assert mapping.scale == pytest.approx(16 / 25) and mapping.offset == pytest.approx(8 / 25)
    # the longest action: 0.4 * 40 s = 16 s = 25 steps of 0.64 s
    assert dm.max_offset == 25
    assert ds[0]["meta"]["fps"] == 25.0
    record = dm.features_record()
    assert record["source"] == str((extracted / "features" / "features.json").resolve())
    assert record["backbone"] == "i3d" and record["stride"] == 16 and record["weights"]["rgb"]
    # predict on the folder without the annotation file: each duration from features.json
    alone = SaladDataModule(predict_path=str(extracted / "features"))
    alone.setup("predict")
    pred = alone.datasets["predict"]
    assert {v.video_id: v.duration for v in pred.videos} == DURATIONS
    assert {m.scale for m in pred.mappings} == {16 / 25}


def test_a_config_value_that_contradicts_features_json_is_refused_naming_both(extracted):
    path = re.escape(str((extracted / "features" / "features.json").resolve()))
    with pytest.raises(ValueError, match=rf"{path} contradicts the config: "
                       r"dataset.datamodule.stride=4 but stride 16 in the file"):  # fmt: skip
        _dm(extracted, stride=4).setup("fit")
    with pytest.raises(ValueError) as err:
        _dm(extracted, feature_dim=2048, default_fps=30.0, window=16).max_offset  # noqa: B018
    message = str(err.value)
    assert "dataset.feature_dim=2048 but feature_dim 8 in the file" in message
    assert "dataset.datamodule.default_fps=30.0 but fps 25 in the file" in message
    assert "dataset.datamodule.window" not in message  # 16 agrees with the file
    assert "dataset.datamodule.geometry=config" in message
    # the same values, typed: accepted
    _dm(extracted, stride=16, window=16, default_fps=25, feature_dim=DIM).setup("fit")
    # geometry=config: the file is not read, the typed values are used as without it
    dm = _dm(extracted, stride=4, geometry="config", default_fps=10.0)
    with pytest.warns(DataWarning, match=r"feature length outside .* \(stride 4\)"):
        dm.setup("fit")  # as it would without the file: the lengths do not fit stride 4
    assert dm.datasets["train"].mappings[0].scale == pytest.approx(4 / 30)  # the video's 30
    assert dm.features_record()["source"] == "config"
    with pytest.raises(ValueError, match="geometry must be one of"):
        _dm(extracted, geometry="file")


def test_without_features_json_the_data_reads_as_before(extracted):
    (extracted / "features" / "features.json").unlink()
    dm = _dm(extracted, default_fps=10.0)
    with pytest.warns(DataWarning, match="feature length outside"):
        dm.setup("fit")
    ds = dm.datasets["train"]
    assert (ds.stride, ds.window) == (4, 16)  # THUMOS14's layout, the defaults
    assert ds.mappings[0].scale == pytest.approx(4 / 30)  # the annotation file's fps
    assert dm.features_record() == config_record(fps=10.0, stride=4, window=16, feature_dim=DIM)
    assert dm.features_record()["backbone"] == "unknown"
    assert read_extracted(extracted / "features") is None


def test_records_differ_by_name():
    trained = {"source": "/a/features.json", **_settings()}
    moved = {"source": "/b/features.json", **_settings(weights={"rgb": {"path": "/x.pt", "sha256": "a" * 64}})}  # fmt: skip
    assert record_mismatches(trained, moved) == []  # the same file elsewhere
    other = {"source": "/b/features.json", **_settings(stride=4, backbone="s3d", feature_dim=1024)}
    assert record_mismatches(trained, other) == [
        "backbone: 'i3d' for the checkpoint, 's3d' here",
        "feature_dim: 8 for the checkpoint, 1024 here",
        "stride: 16 for the checkpoint, 4 here",
    ]
    weights = {"source": "/b/features.json", **_settings(weights={"rgb": {"path": "/m", "sha256": "b" * 64}})}  # fmt: skip
    assert record_mismatches(trained, weights) == [
        f"weights.rgb.sha256: {'a' * 64!r} for the checkpoint, {'b' * 64!r} here"
    ]
    # one record from a config: the geometry both know
    config = config_record(fps=None, stride=4, window=16, feature_dim=8)
    assert record_mismatches(trained, config) == ["stride: 16 for the checkpoint, 4 here"]
    # both from configs: a config's fps is only a fallback
    assert record_mismatches(config_record(fps=30, stride=4, window=16, feature_dim=8), config) == []  # fmt: skip
    assert record_mismatches({}, config) == []  # a checkpoint from before the record


# --- the report of a prediction, by hand --------------------------------------------------


def _video() -> VideoDetections:
    return VideoDetections(
        "v1",
        segments=[[1.0, 4.0], [2.5, 6.25], [3.0, 5.0], [10.0, 12.0], [59.9996, 3661.5], [0.0, 1.0]],
        scores=[0.9, 0.6, 0.7, 0.05, 0.3, 0.2],
        labels=[0, 1, 0, 1, 2, 1],
    )


NAMES = ["Jump", "Throw, far", None]  # a comma to quote; an unnamed class


def test_csv_rows_by_hand():
    other = VideoDetections("a0", [[0.5, 1.25]], [0.125], [1])
    rows = list(csv.reader(detections_csv([_video(), other], NAMES).splitlines()))
    assert rows == [
        ["video", "start", "end", "label", "score"],
        ["a0", "0.500", "1.250", "Throw, far", "0.1250"],  # videos by id
        ["v1", "0.000", "1.000", "Throw, far", "0.2000"],  # then by start time
        ["v1", "1.000", "4.000", "Jump", "0.9000"],
        ["v1", "2.500", "6.250", "Throw, far", "0.6000"],
        ["v1", "3.000", "5.000", "Jump", "0.7000"],
        ["v1", "10.000", "12.000", "Throw, far", "0.0500"],
        ["v1", "60.000", "3661.500", "2", "0.3000"],  # unnamed: its index
    ]
    assert detections_csv([], NAMES) == "video,start,end,label,score\n"


def test_srt_cues_by_hand():
    assert srt_timestamp(0) == "00:00:00,000"
    assert srt_timestamp(3661.5) == "01:01:01,500"
    assert srt_timestamp(59.9996) == "00:01:00,000"  # rounded to the millisecond
    video = _video()
    # best first: Jump 0.9 [1, 4]; Jump 0.7 overlaps it (left out); Throw 0.6; "2" 0.3;
    # Throw 0.2 [0, 1] (touches nothing of its class); 0.05 under the floor
    assert subtitle_detections(video) == [0, 1, 4, 5]
    assert subtitle_detections(video, max_detections=2) == [0, 1]
    cues = srt_cues(video, NAMES)
    assert cues == [
        (0, 1000, ["Throw, far (0.20)"]),
        (1000, 2500, ["Jump (0.90)"]),
        (2500, 4000, ["Jump (0.90)", "Throw, far (0.60)"]),
        (4000, 6250, ["Throw, far (0.60)"]),
        (60000, 3661500, ["2 (0.30)"]),
    ]
    # one line at a time: the two cues that show the same line are one
    assert srt_cues(video, NAMES, max_lines=1)[1] == (1000, 4000, ["Jump (0.90)"])
    assert srt_text(cues[1:3]) == (
        "1\n00:00:01,000 --> 00:00:02,500\nJump (0.90)\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nJump (0.90)\nThrow, far (0.60)\n"
    )
    assert srt_cues(video, NAMES, min_score=0.95) == [] and srt_text([]) == ""


# --- predict on videos: which input, which weights -------------------------------------


def test_predict_path_names_videos_by_extension(tmp_path):
    from salad_lightning.video_predict import is_video_input

    (tmp_path / "clip.MP4").write_bytes(b"")
    (tmp_path / "clip.npy").write_bytes(b"")
    assert is_video_input(tmp_path / "clip.MP4")
    assert not is_video_input(tmp_path / "clip.npy")
    with pytest.raises(ValueError, match="holds video files .* and .npy feature files"):
        is_video_input(tmp_path)
    (tmp_path / "clip.npy").unlink()
    assert is_video_input(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such video file"):
        is_video_input(tmp_path / "gone.mkv")
    assert not is_video_input(tmp_path / "features")  # a folder that is not there: features


@pytest.fixture(scope="module")
def port_weights(tmp_path_factory):
    """Random I3D RGB weights in the public port's file format."""
    from _literal_i3d import InceptionI3d as LiteralI3d
    from _literal_i3d import randomise

    path = tmp_path_factory.mktemp("weights") / "rgb_imagenet.pt"
    torch.save(randomise(LiteralI3d(in_channels=3)).state_dict(), path)
    return path


def test_the_checkpoints_weights_are_found_or_named(tmp_path, port_weights):
    import hashlib

    from salad_lightning.video_predict import backbones_for

    sha = hashlib.sha256(port_weights.read_bytes()).hexdigest()
    config = config_record(fps=None, stride=4, window=16, feature_dim=2048)
    with pytest.raises(ValueError, match="trained on features without a features.json"):
        backbones_for(config, ckpt="run.ckpt")
    gone = {"source": "f.json", **_settings(weights={"rgb": {"path": "/gone/rgb.pt", "sha256": sha}})}  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"/gone/rgb.pt \(sha256 \w+\), are not there: "
                       r"pass extract.rgb_weights="):  # fmt: skip
        backbones_for(gone, ckpt="run.ckpt")
    [backbone] = backbones_for(gone, ckpt="run.ckpt", rgb_weights=port_weights)
    assert backbone.weights["sha256"] == sha
    other = {"source": "f.json", **_settings(weights={"rgb": {"path": str(port_weights), "sha256": "b" * 64}})}  # fmt: skip
    with pytest.raises(ValueError, match=rf"sha256 {sha}, but the checkpoint's rgb features "
                       r"were made with .* \(sha256 b{64}\)"):  # fmt: skip
        backbones_for(other, ckpt="run.ckpt")


# --- the checkpoint's record ---------------------------------------------------------------


def _train_on(root: Path, tmp_path: Path, extra: list[str] = ()) -> Path:
    cfg = compose_cfg(
        tmp_path,
        ["dataset=extracted", "debug=tiny", f"dataset.root={root}", "dataset.num_classes=2",
         "dataset.datamodule.test_subset=null", "dataset.datamodule.num_workers=0",
         "trainer.max_epochs=2", *extra],
        tiny=False,
    )  # fmt: skip
    run_pipeline(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_the_checkpoint_records_its_features_and_refuses_others(extracted, tmp_path):
    ckpt = _train_on(extracted, tmp_path / "train")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    record = saved["features"]
    assert record == {"source": str((extracted / "features" / "features.json").resolve()),
                      **_settings()}  # fmt: skip
    assert saved["class_names"] == ["jump", "throw"]
    # the same features elsewhere, with their own features.json: predicted on
    same = extracted_folder(tmp_path / "same", {"new": 30.0})
    out = tmp_path / "ok.json"
    run_pipeline(compose_cfg(tmp_path / "ok", [
        "dataset=extracted", "debug=tiny", f"dataset.root={tmp_path / 'nowhere'}",
        "dataset.num_classes=2", "mode=predict", f"ckpt_path={ckpt}",
        f"dataset.datamodule.predict_path={same}", f"predict_output={out}"], tiny=False))  # fmt: skip
    assert list(json.loads(out.read_text())["results"]) == ["new"]
    # features made with another stride: refused, both named
    other = extracted_folder(tmp_path / "other", {"new": 30.0}, stride=4)
    cfg = compose_cfg(tmp_path / "refused", [
        "dataset=extracted", "debug=tiny", f"dataset.root={tmp_path / 'nowhere'}",
        "dataset.num_classes=2", "mode=predict", f"ckpt_path={ckpt}",
        f"dataset.datamodule.predict_path={other}"], tiny=False)  # fmt: skip
    with pytest.raises(ValueError) as err:
        run_pipeline(cfg)
    message = str(err.value)
    assert f"the checkpoint {ckpt} was trained on other features" in message
    assert f"trained on {record['source']}, given {(other / 'features.json').resolve()}" in message
    assert "stride: 16 for the checkpoint, 4 here" in message
    assert not (tmp_path / "refused" / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_checkpoint_trained_without_features_json_records_the_configs_geometry(tmp_path):
    cfg = compose_cfg(tmp_path, [])  # the synthetic data: stride 16, window 16, 30 fps
    run_pipeline(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    record = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["features"]  # fmt: skip
    assert record == config_record(fps=30.0, stride=16, window=16, feature_dim=16)
    assert record["backbone"] == "unknown"


# --- salad-extract, training, and mode=predict on an .mp4 --------------------------------


@pytest.mark.slow
def test_extract_train_and_predict_on_a_video(tmp_path, port_weights):
    pytest.importorskip("av", reason="PyAV: pip install salad-lightning[video]")
    pytest.importorskip("cv2", reason="OpenCV: pip install salad-lightning[video]")
    from _videos import write_moving_square
    from salad_lightning.extract import extract_folder, load_backbone

    # three source videos at 30 fps whose square moves during the action (1.4 s each: 35
    # frames at 25 fps, two 16-frame slices), features with the port's file format
    spec = {"walk_a": [(0.3, 1.0)], "walk_b": [(0.5, 1.3)], "run_c": [(0.2, 0.9)]}
    videos, root = tmp_path / "videos", tmp_path / "data"
    videos.mkdir()
    for vid, actions in spec.items():
        write_moving_square(videos / f"{vid}.mp4", 1.4, rate=30, actions=actions,
                            dx=2 if vid.startswith("walk") else 4)  # fmt: skip
    report = extract_folder(
        videos, root / "features", [load_backbone("i3d_rgb", port_weights)],
        size=193, crop=193, workers=0, progress=False, device="cpu",
    )  # fmt: skip  # 193: the smallest frames I3D takes, a faster test
    assert sorted(report.done) == sorted(spec)
    database = {
        vid: {"subset": "train", "duration": 1.4, "fps": 30.0, "annotations": [
            {"label": vid.split("_")[0], "segment": list(a)} for a in actions]}
        for vid, actions in spec.items()
    }  # fmt: skip
    (root / "annotations.json").write_text(json.dumps({"database": database}))
    ckpt = _train_on(root, tmp_path / "train", ["trainer.max_epochs=5"])
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["features"]["size"] == 193
    # the mapping took the features' 25 fps, not the annotation file's 30: two steps where
    # duration * fps / stride expects 1.4 * 25 / 16 (at 30 fps: 2.625, a flagged 0.76)
    report = json.loads((ckpt.parents[1] / "data_report.json").read_text())
    length = report["splits"]["train"]["feature_length"]
    assert length["median_ratio"] == pytest.approx(2 / (1.4 * 25 / 16), abs=1e-4)
    assert "warning" not in length

    # a new video, at 25 fps: its features are made with the checkpoint's settings
    video = write_moving_square(tmp_path / "new video.mp4", 1.52, rate=25, actions=[(0.4, 1.2)])
    res = run_cli(
        [f"paths.root_dir={tmp_path / 'p'}", "dataset=extracted", "debug=tiny",
         f"dataset.root={tmp_path / 'nowhere'}", "dataset.num_classes=2", "mode=predict",
         f"ckpt_path={ckpt}", f"dataset.datamodule.predict_path='{video}'",
         "extract.workers=0", "extract.device=cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "videos: 100%|" in res.stderr and "new video: 100%|" in res.stderr  # progress bars
    [run] = list((tmp_path / "p" / "logs" / "runs").iterdir())
    meta = json.loads((run / "features" / "features.json").read_text())
    assert meta["videos"]["new video"]["duration"] == pytest.approx(1.52)
    assert {k: meta["settings"][k] for k in ("stride", "size", "fps")} == {
        "stride": 16, "size": 193, "fps": 25}  # fmt: skip
    results = json.loads((run / "results.json").read_text())["results"]
    dets = results["new video"]
    assert dets, "no detections"
    for d in dets:  # in the video's seconds
        assert 0.0 <= d["segment"][0] < d["segment"][1] <= 1.52 + 1e-9
        assert d["label"] in ("run", "walk")
    rows = list(csv.DictReader((run / "detections.csv").read_text().splitlines()))
    assert len(rows) == len(dets) and {r["video"] for r in rows} == {"new video"}
    assert sorted(float(r["score"]) for r in rows) == pytest.approx(
        sorted(d["score"] for d in dets), abs=5e-5)  # fmt: skip
    srt = (run / "subtitles" / "new video.srt").read_text()
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n(run|walk) \(\d\.\d\d\)\n", srt)  # fmt: skip
    assert (run / "plots" / "timeline_new video.png").stat().st_size > 1000
