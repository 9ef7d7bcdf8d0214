"""Feature files: formats, RGB+flow, downsample/resize by hand, and the checks' messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salad_lightning.data.features import (
    FeatureSource,
    check_finite,
    downsample_features,
    npy_shape,
    read_feature_file,
    resize_features,
)


def test_npy_is_memory_mapped_and_header_read_alone(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    arr = read_feature_file(tmp_path / "a.npy")
    assert isinstance(arr, np.memmap) and not arr.flags.writeable
    np.testing.assert_array_equal(arr, x)
    assert npy_shape(tmp_path / "a.npy") == (4, 3)


def test_pt_and_csv_with_and_without_header(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    torch.save(torch.from_numpy(x), tmp_path / "a.pt")
    np.testing.assert_allclose(read_feature_file(tmp_path / "a.pt"), x)
    np.savetxt(tmp_path / "h.csv", x, delimiter=",", header="f0,f1,f2", comments="")
    np.savetxt(tmp_path / "n.csv", x, delimiter=",")
    for name in ("h.csv", "n.csv"):
        got = read_feature_file(tmp_path / name)
        assert got.shape == (4, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, x, rtol=1e-6)
    torch.save({"feats": torch.zeros(2, 2)}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="d.pt: expected a saved tensor, found dict"):
        read_feature_file(tmp_path / "d.pt")


def test_downsample_by_hand():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    # groups {0,1} {2,3} and the partial last group {4}, averaged over what it has
    np.testing.assert_array_equal(downsample_features(x, 2)[:, 0], [0.5, 2.5, 4.0])
    np.testing.assert_array_equal(downsample_features(x, 4)[:, 0], [1.5, 4.0])
    np.testing.assert_array_equal(downsample_features(x, 5)[:, 0], [2.0])
    assert downsample_features(x, 1) is x


def test_resize_by_hand_and_like_interpolate():
    x = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    # output i samples input position (i + 0.5) * T / L - 0.5, clamped at the edges
    assert resize_features(x, 2)[:, 0].tolist() == [0.5, 2.5]
    assert resize_features(x, 8)[:, 0].tolist() == [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]
    assert resize_features(x[:1], 3)[:, 0].tolist() == [0, 0, 0]
    for t in (37, 100, 1000):
        y = torch.randn(t, 5)
        ref = F.interpolate(y.t()[None], size=100, mode="linear", align_corners=False)[0].t()
        got = resize_features(y.numpy(), 100)
        assert got.dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(got), ref)
    y = np.zeros((37, 5), np.float32)
    assert resize_features(y, 37) is y


def test_rgb_and_flow_are_concatenated(tmp_path):
    (tmp_path / "rgb").mkdir(), (tmp_path / "flow").mkdir()
    np.save(tmp_path / "rgb" / "v.npy", np.ones((5, 3), np.float32))
    np.save(tmp_path / "flow" / "v.npy", np.full((5, 2), 2.0, np.float32))
    src = FeatureSource(
        rgb_dir=str(tmp_path / "rgb"), flow_dir=str(tmp_path / "flow"), feature_dim=5
    )
    x = src.load("v")
    assert x.shape == (5, 5)
    np.testing.assert_array_equal(x[0], [1, 1, 1, 2, 2])
    assert src.scan_shape("v") == (5, 5)
    np.save(tmp_path / "flow" / "w.npy", np.zeros((6, 2), np.float32))
    np.save(tmp_path / "rgb" / "w.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(
        ValueError,
        match=r"\(video w\): RGB and flow lengths differ: .*rgb/w.npy has 5, .*flow/w.npy has 6 steps",
    ):
        src.load("w")


def test_source_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="set either feature_dir, or rgb_dir and flow_dir"):
        FeatureSource()
    with pytest.raises(ValueError, match="rgb_dir and flow_dir go together"):
        FeatureSource(rgb_dir="a")
    with pytest.raises(ValueError, match=r"ext '.h5' is not supported"):
        FeatureSource(feature_dir="a", ext=".h5")
    assert FeatureSource(feature_dir="a", ext="npy").ext == ".npy"


def test_missing_lists_ids(tmp_path):
    np.save(tmp_path / "v_a.npy", np.zeros((2, 2), np.float32))
    src = FeatureSource(feature_dir=str(tmp_path), prefix="v_")
    assert src.missing(["a", "b", "c"]) == ["b", "c"]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(7, np.float32), r"expected a 2-D \(T, C\) array, found shape \(7,\)"),
        (
            np.zeros((2, 3, 4), np.float32),
            r"expected a 2-D \(T, C\) array, found shape \(2, 3, 4\)",
        ),
        (np.zeros((0, 6), np.float32), r"empty feature array, shape \(0, 6\)"),
        (np.zeros((5, 4), np.float32), r"expected feature_dim 6, found 4"),
    ],
)
def test_shape_checks_name_file_video_expected_found(tmp_path, array, message):
    np.save(tmp_path / "vid1.npy", array)
    src = FeatureSource(feature_dir=str(tmp_path), feature_dim=6)
    pattern = r"vid1.npy \(video vid1\): " + message
    with pytest.raises(ValueError, match=pattern):
        src.scan_shape("vid1")  # from the header, at dataset construction
    with pytest.raises(ValueError, match=pattern):
        src.load("vid1")


def test_shape_checks_for_pt_happen_on_load(tmp_path):
    torch.save(torch.zeros(5, 4), tmp_path / "vid2.pt")
    src = FeatureSource(feature_dir=str(tmp_path), ext=".pt", feature_dim=6)
    assert src.scan_shape("vid2") is None
    with pytest.raises(
        ValueError, match=r"vid2.pt \(video vid2\): expected feature_dim 6, found 4"
    ):
        src.load("vid2")


def test_nonfinite_values_are_reported():
    x = np.zeros((4, 3), np.float32)
    x[2, 1] = np.nan
    x[3, 0] = np.inf
    with pytest.raises(
        ValueError,
        match=r"f.npy \(video v\): features must be finite, found 1 NaN and 1 Inf values, "
        r"the first at step 2 \(channel 1\)",
    ):
        check_finite(x, "f.npy (video v)")
    check_finite(np.zeros((2, 2), np.float32), "fine")
    # rows of a crop: the step is given in the whole video
    with pytest.raises(ValueError, match=r"the first at step 102 \(channel 1\)"):
        check_finite(x, "f.npy (video v)", offset=100)
    # huge but finite values are fine
    check_finite(np.full((1000, 8), 3e38, np.float32), "huge")
