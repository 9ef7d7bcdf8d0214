"""Decoding, resampling by timestamps, geometry and TV-L1 flow, on videos written here.

The videos are tiny H.264 files written with PyAV. Each frame says which source frame it
is: a code frame's left half is gray level ``16 + 14 * (j % 16)`` and its right half
``16 + 14 * (j // 16)``, so a decoded frame's two halves give back ``j``. Expected
counts and frame indices come from each file's known frame times, with fractions.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV: pip install salad-lightning[video]")
cv2 = pytest.importorskip("cv2", reason="OpenCV: pip install salad-lightning[video]")

from salad_lightning.extract.flow import (  # noqa: E402
    TVL1Flow,
    TVL1Options,
    frames_with_flow,
    scale_flow,
)
from salad_lightning.extract.geometry import num_slices  # noqa: E402
from salad_lightning.extract.video import (  # noqa: E402
    ResampledVideo,
    VideoDecodeError,
    crop_box,
    frame_to_array,
    resample,
    resized_shape,
)

H, W = 48, 64  # the test videos' frame size


def code_frame(j: int) -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:, : W // 2] = 16 + 14 * (j % 16)
    img[:, W // 2 :] = 16 + 14 * (j // 16)
    return img


def _blocks(rng, low: int, high: int, rows: int, cols: int) -> np.ndarray:
    """Random gray 3 x 3 blocks: texture coarse enough for the flow's image pyramid."""
    small = rng.integers(low, high, (rows // 3, cols // 3, 1), dtype=np.uint8)
    return np.repeat(np.repeat(np.repeat(small, 3, 0), 3, 1), 3, 2)


_RNG = np.random.default_rng(0)
_TEXTURE = _blocks(_RNG, 140, 250, 12, 12)
_GROUND = _blocks(_RNG, 20, 90, H, W + 2)[:, :W]


def square_frame(j: int, *, dx: int = 2, dy: int = 1) -> np.ndarray:
    """A bright 12 x 12 square moved (dx, dy) pixels a frame over a still dark ground,
    both textured so that flow has something to find everywhere."""
    img = _GROUND.copy()
    y, x = 14 + dy * j, 10 + dx * j
    img[y : y + 12, x : x + 12] = _TEXTURE
    return img


def write_video(
    path: Path,
    n: int,
    *,
    rate: int | Fraction = 25,
    pts_ms: list[int] | None = None,
    frame=code_frame,
) -> Path:
    """``n`` frames of ``frame(j)``, near-lossless H.264; ``pts_ms`` gives each frame's
    time in milliseconds (a variable frame rate: write it as .mkv, whose timestamps are
    milliseconds; the last frame lasts 1 / rate)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "0"})
        stream.height, stream.width, stream.pix_fmt = H, W, "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for j in range(n):
            vf = av.VideoFrame.from_ndarray(frame(j), format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[j], Fraction(1, 1000)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_code(frame: np.ndarray) -> int:
    """The source index of a (48 x 48) code frame cut from the centre of a 64 x 48 one."""
    left = frame[4:44, 4:20].mean()  # source columns 12..27: the left half
    right = frame[4:44, 28:44].mean()  # source columns 36..51: the right half
    return int(round((left - 16) / 14)) + 16 * int(round((right - 16) / 14))


# --- resampling -----------------------------------------------------------------------


def test_resample_takes_the_last_frame_shown_at_each_output_time():
    # frames at 0, 0.1, 0.25 s, the last lasting 0.1 s (ends at 0.35); output at 10 fps:
    # t = 0 -> a, 0.1 -> b (starts exactly then), 0.2 -> b, 0.3 -> c; 0.4 is past the end
    items = [
        (Fraction(0), Fraction(1, 10), "a"),
        (Fraction(1, 10), Fraction(1, 10), "b"),
        (Fraction(1, 4), Fraction(1, 10), "c"),
    ]
    assert list(resample(items, Fraction(10))) == ["a", "b", "b", "c"]
    # at 4 fps: t = 0 -> a, 0.25 -> c (b is never shown at an output time)
    assert list(resample(items, Fraction(4))) == ["a", "c"]
    assert list(resample([], Fraction(25))) == []


@pytest.mark.parametrize(
    ("name", "n", "rate", "pts_ms"),
    [
        ("cfr25.mp4", 40, 25, None),
        ("cfr30.mp4", 45, 30, None),
        ("ntsc.mp4", 45, Fraction(30000, 1001), None),
        ("vfr.mkv", 12, 25, [0, 40, 80, 200, 210, 220, 500, 540, 560, 800, 810, 1000]),
    ],
)
def test_resampled_frames_are_the_source_frames_shown_at_k_over_25(tmp_path, name, n, rate, pts_ms):
    path = write_video(tmp_path / name, n, rate=rate, pts_ms=pts_ms)
    times = (
        [Fraction(j) / Fraction(rate) for j in range(n)]
        if pts_ms is None
        else [Fraction(t, 1000) for t in pts_ms]
    )
    duration = times[-1] + 1 / Fraction(rate)  # each file's last frame lasts 1 / rate
    expected_count = math.ceil(duration * 25)
    expected = [
        max(j for j, t in enumerate(times) if t <= Fraction(k, 25)) for k in range(expected_count)
    ]

    video = ResampledVideo(path, fps=25, size=48, crop=48)
    got = [decode_code(f) for f in video]
    assert got == expected
    assert video.info.frames == expected_count
    assert video.info.source_frames == n
    assert video.info.duration == pytest.approx(float(duration))
    if pts_ms is None:
        assert video.info.average_rate == pytest.approx(float(rate))


def test_29_97_is_not_30(tmp_path):
    # at k = 5 (0.2 s) a 30 fps video shows frame 6 (0.2 s), a 30000/1001 one frame 5
    # (frame 6 starts at 6 * 1001 / 30000 = 0.2002 s)
    ntsc = [decode_code(f) for f in ResampledVideo(write_video(tmp_path / "a.mp4", 10, rate=Fraction(30000, 1001)), size=48, crop=48)]  # fmt: skip
    thirty = [decode_code(f) for f in ResampledVideo(write_video(tmp_path / "b.mp4", 10, rate=30), size=48, crop=48)]  # fmt: skip
    assert (ntsc[5], thirty[5]) == (5, 6)


def test_files_that_are_not_videos_are_named(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    good = write_video(tmp_path / "good.mp4", 20)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    for path in (text, truncated):
        with pytest.raises(VideoDecodeError, match=path.name):
            list(ResampledVideo(path))


# --- geometry and RGB -----------------------------------------------------------------


def test_resize_keeps_the_aspect_and_crops_the_centre():
    assert resized_shape(480, 640, 226) == (226, 301)  # 640 * 226 / 480 = 301.33
    assert resized_shape(1080, 1920, 226) == (226, 402)  # 401.78
    assert resized_shape(640, 360, 226) == (402, 226)  # portrait
    assert crop_box(226, 301, 224) == (1, 38)  # margins 2 and 77: the odd pixel after
    with pytest.raises(ValueError, match="larger"):
        crop_box(100, 300, 112)

    # a 64 x 48 frame whose pixel value is 4 * column in red and 5 * row in green, halved to
    # 32 x 24 then cut to the centre 16 x 16 (top 4, left 8): output pixel (y, x) averages
    # source columns 2(x + 8) and 2(x + 8) + 1, so red = 4 * (2x + 16.5) = 8x + 66,
    # and rows 2(y + 4), +1: green = 5 * (2y + 8.5) = 10y + 42.5
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0], img[..., 1] = 4 * cols, 5 * rows
    out = frame_to_array(av.VideoFrame.from_ndarray(img, format="rgb24"), size=24, crop=16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    ys, xs = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    inner = (slice(1, -1), slice(1, -1))  # the scaler's edge pixels blend differently
    assert np.abs(out[..., 0][inner] - (8 * xs + 66)[inner]).max() <= 2
    assert np.abs(out[..., 1][inner] - (10 * ys + 42.5)[inner]).max() <= 2

    # shrinking averages the source pixels (no aliasing): every 4th column white, shrunk
    # 4 x, gives 255 / 4 = 63.75 away from the left edge (sampling would give 0 or 255)
    stripes = np.zeros((64, 256, 3), np.uint8)
    stripes[:, ::4] = 255
    out = frame_to_array(av.VideoFrame.from_ndarray(stripes, format="rgb24"), size=16, crop=16)
    assert np.abs(out[4:12, 4:12].astype(float) - 63.75).max() <= 1


# --- flow -----------------------------------------------------------------------------


def test_flow_is_clipped_to_20_pixels_and_scaled_to_one():
    raw = np.array([-45.0, -20.0, -3.0, 0.0, 7.0, 20.0, 33.0], np.float32)
    np.testing.assert_allclose(scale_flow(raw), [-1, -1, -0.15, 0, 0.35, 1, 1], rtol=1e-6)
    assert scale_flow(raw).dtype == np.float32


def test_flow_of_a_moving_square_points_its_way(tmp_path):
    path = write_video(tmp_path / "square.mp4", 8, frame=square_frame)  # 2 px right, 1 down
    frames = list(ResampledVideo(path, fps=25, size=48, crop=48))
    pairs = list(frames_with_flow(frames, TVL1Flow(TVL1Options(scales=3, warps=3))))
    assert len(pairs) == len(frames) == 8
    assert all(p[0] is f for p, f in zip(pairs, frames))
    np.testing.assert_array_equal(pairs[-1][1], pairs[-2][1])  # the last field repeats
    for j, (_, field) in enumerate(pairs[:-1]):
        assert field.shape == (48, 48, 2) and field.dtype == np.float32
        assert np.abs(field).max() <= 1.0
        # the square's inside in frame j: source (14 + j, 10 + 2j) + 12, crop offset 8
        y, x = 14 + j, 10 + 2 * j - 8
        inside = field[y + 3 : y + 9, x + 3 : x + 9]
        assert inside[..., 0].mean() == pytest.approx(2 / 20, abs=0.03)  # x: +2 px
        assert inside[..., 1].mean() == pytest.approx(1 / 20, abs=0.03)  # y: +1 px (down)
        assert np.abs(field[40:, :8]).mean() < 0.01  # a corner far from the square


def test_a_video_of_one_frame_has_one_zero_field():
    frame = square_frame(0)[:, 8:56]
    ((rgb, field),) = frames_with_flow([frame], TVL1Flow(TVL1Options(scales=1)))
    assert rgb is frame and not field.any() and field.shape == (48, 48, 2)


def test_slices_count_whole_windows():
    # hand-worked: 75 frames (3 s at 25 fps), window 16: stride 16 -> 0, 16, 32, 48 (ends
    # at 64; 64 + 16 > 75) = 4; stride 4 -> starts 0..56 = 15
    assert num_slices(75, window=16, stride=16) == 4
    assert num_slices(75, window=16, stride=4) == 15
    assert num_slices(16, window=16, stride=16) == 1
    assert num_slices(15, window=16, stride=16) == 0
