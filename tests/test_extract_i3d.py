"""I3D: equal to a literal transcription of the public port on its own weight files, and
files that do not fit are refused by key; the torchvision backbones where torchvision is."""

from __future__ import annotations

import importlib

import pytest
import torch

from _literal_i3d import InceptionI3d as LiteralI3d
from _literal_i3d import randomise
from salad_lightning.extract import BACKBONES, WeightsError, build_backbone, load_backbone
from salad_lightning.extract.i3d import same_padding


def _port_file(tmp_path, in_channels: int, *, seed: int, legacy: bool = False):
    """The transcription with random weights, saved as the port's files are."""
    literal = randomise(LiteralI3d(in_channels=in_channels), seed=seed)
    state = literal.state_dict()
    if legacy:  # files written before PyTorch 0.4.1 have no batch-norm counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / f"i3d_{in_channels}_{seed}.pt"
    torch.save(state, path)
    return literal, path


def test_same_padding_by_hand():
    # size 224, kernel 7, stride 2: 224 % 2 == 0 -> total 7 - 2 = 5 -> (2, 3)
    assert same_padding(224, 7, 2) == (2, 3)
    # size 7, kernel 3, stride 2: 7 % 2 == 1 -> total 3 - 1 = 2 -> (1, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    # size 8, kernel 1, stride 1: total max(1 - 1, 0) = 0
    assert same_padding(8, 1, 1) == (0, 0)
    # size 5, kernel 2, stride 2: 5 % 2 == 1 -> total 2 - 1 = 1 -> (0, 1)
    assert same_padding(5, 2, 2) == (0, 1)


@pytest.mark.parametrize(
    ("name", "channels", "shape", "legacy"),
    [
        # the clip the extractor feeds: one pooled position
        ("i3d_rgb", 3, (1, 3, 16, 224, 224), False),
        # odd sizes against the strides on the way (T 10 -> 5, H 200 -> 25 -> 13, W 230 ->
        # 115 -> ... -> 8), and a pool that leaves 1 x 1 x 2 positions, which forward averages
        ("i3d_flow", 2, (1, 2, 10, 200, 230), True),
    ],
)
def test_i3d_equals_the_port_on_its_weight_file(tmp_path, name, channels, shape, legacy):
    literal, path = _port_file(tmp_path, channels, seed=len(shape) + shape[2], legacy=legacy)
    model = build_backbone(name, weights=path)
    assert not model.training
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = literal.extract_features(x)
        # one forward of ours per case (the CPU is slow): the (B, 1024) features where the
        # pool leaves one position, every position of the map where it leaves several
        got = model(x) if expected[0, 0].numel() == 1 else model.feature_map(x)
    assert expected.shape[:2] == (shape[0], 1024)
    assert expected.abs().mean() > 0.01  # features that carry the weights
    if got.dim() == 2:
        assert got.shape == (shape[0], BACKBONES[name].feature_dim)
        torch.testing.assert_close(got, expected.flatten(1), rtol=1e-5, atol=1e-6)
    else:
        assert got.shape[2:] == (1, 1, 2)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_forward_averages_the_positions_the_pool_leaves(monkeypatch):
    model = build_backbone("i3d_flow")  # random weights; the map is replaced below
    fmap = torch.arange(2 * 1024 * 2, dtype=torch.float32).view(2, 1024, 1, 1, 2)
    monkeypatch.setattr(model, "feature_map", lambda x: fmap)
    # position values 2c and 2c + 1 (plus the batch offset): their mean is 2c + 0.5
    expected = torch.arange(0, 2 * 1024 * 2, 2, dtype=torch.float32).view(2, 1024) + 0.5
    torch.testing.assert_close(model(torch.zeros(2, 2, 16, 224, 224)), expected)


def test_weights_record_names_the_file_and_its_sha256(tmp_path):
    import hashlib

    _, path = _port_file(tmp_path, 3, seed=0)
    loaded = load_backbone("i3d_rgb", path)
    assert loaded.weights == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert load_backbone("i3d_rgb", None).weights is None  # random weights, recorded as such


@pytest.fixture(scope="module")
def port_state():
    return LiteralI3d(in_channels=3).state_dict()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("Mixed_4d.b1b.conv3d.weight"), "missing key.*Mixed_4d.b1b.conv3d.weight"),
        (lambda s: s.pop("Mixed_5c.b0.bn.running_var"), "missing key.*Mixed_5c.b0.bn.running_var"),
        (lambda s: s.update({"fc.weight": torch.zeros(3)}), "unexpected key.*fc.weight"),
        (
            lambda s: s.update({"Mixed_3b.b0.conv3d.weight": torch.zeros(64, 192, 3, 1, 1)}),
            r"Mixed_3b.b0.conv3d.weight has shape \(64, 192, 3, 1, 1\).*\(64, 192, 1, 1, 1\)",
        ),
    ],
)
def test_a_file_that_does_not_fit_is_refused_naming_file_and_key(
    tmp_path, port_state, edit, message
):
    state = dict(port_state)
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=f"edited.pt.*{message}"):
        build_backbone("i3d_rgb", weights=path)


def test_the_other_streams_file_and_other_files_are_refused(tmp_path, port_state):
    rgb = tmp_path / "rgb_imagenet.pt"
    torch.save(port_state, rgb)
    with pytest.raises(WeightsError, match=r"rgb_imagenet.pt: key Conv3d_1a_7x7.conv3d.weight"):
        build_backbone("i3d_flow", weights=rgb)
    with pytest.raises(WeightsError, match="no such weights file"):
        build_backbone("i3d_rgb", weights=tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match="notes.pt: not a PyTorch weights file"):
        build_backbone("i3d_rgb", weights=text)
    whole = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": port_state, "epoch": 3}, whole)
    with pytest.raises(WeightsError, match="checkpoint.pt: expected a plain state dict"):
        build_backbone("i3d_rgb", weights=whole)
    with pytest.raises(ValueError, match="unknown backbone 'i3d'"):
        build_backbone("i3d")


def test_a_fine_tuned_file_with_other_logits_loads(tmp_path):
    # the logits are not used for features: a 157-class file (Charades) is fine
    literal = randomise(LiteralI3d(num_classes=157, in_channels=3), seed=3)
    path = tmp_path / "rgb_charades.pt"
    torch.save(literal.state_dict(), path)
    model = build_backbone("i3d_rgb", weights=path)
    assert model.logits.conv3d.weight.shape[0] == 157


def _torchvision_video():
    try:
        return importlib.import_module("torchvision.models.video")
    except Exception as err:  # absent, or built for another torch
        pytest.skip(f"torchvision is not usable here: {err}")


@pytest.mark.parametrize("name", ["r2plus1d_18", "s3d"])
def test_torchvision_backbone_from_a_state_dict_file(tmp_path, name):
    video = _torchvision_video()
    net = getattr(video, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    model = build_backbone(name, weights=path)
    spec = BACKBONES[name]
    x = torch.randn(1, 3, 16, spec.crop, spec.crop)
    with torch.no_grad():
        got = model(x)
    assert got.shape == (1, spec.feature_dim)
    if name == "r2plus1d_18":  # the classifier's input: fc(features) is the logits
        torch.testing.assert_close(net.fc(got), net(x), rtol=1e-4, atol=1e-5)


def test_torchvision_default_weights_must_be_cached(tmp_path, monkeypatch):
    _torchvision_video()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(WeightsError, match="not in torch's hub cache"):
        build_backbone("r2plus1d_18", weights="DEFAULT")
