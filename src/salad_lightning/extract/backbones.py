"""The clip networks a feature comes from, behind one ``build_backbone(name, weights)``.

| name | stream | feature | input (B, C, T, H, W) | frames (``size`` / ``crop``) |
|---|---|---|---|---|
| ``i3d_rgb`` | rgb | 1024 | RGB as ``x / 255 * 2 - 1`` | 226 / 224 |
| ``i3d_flow`` | flow | 1024 | TV-L1 (x, y) / 20, clipped to [-1, 1] | 226 / 224 |
| ``r2plus1d_18``, ``r3d_18``, ``mc3_18`` | rgb | 512 | ``(x / 255 - mean) / std`` | 128 / 112 |
| ``s3d`` | rgb | 1024 | ``(x / 255 - mean) / std`` | 256 / 224 |

``mean``, ``std`` of the torchvision models are Kinetics-400's, the values torchvision's
own ``VideoClassification`` transform uses: (0.43216, 0.394666, 0.37645) and
(0.22803, 0.22145, 0.216989). The frame sizes are each model's own (torchvision resizes
to 128 x 171 for the ResNets and 256 x 256 for S3D; here the shorter side goes to the
size and the aspect is kept).

Weights: ``i3d_*`` read the public PyTorch port's files (``rgb_imagenet.pt``,
``flow_imagenet.pt``; see ``extract/i3d.py``). The torchvision models read a state dict
file of that model, or ``weights="DEFAULT"``: the file of torchvision's default weights
enum (Kinetics-400), which must already be in torch's hub cache; nothing is downloaded
here (one way to fetch it: ``python -c "from torchvision.models.video import
R2Plus1D_18_Weights as W; W.DEFAULT.get_state_dict()"``). ``weights=None`` leaves the
random initialisation (timing, tests). torchvision is imported only for those models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salad_lightning.extract.i3d import (
    FEATURE_DIM,
    InceptionI3d,
    WeightsError,
    check_state_dict,
    load_port_weights,
    read_state_dict,
)
from salad_lightning.utils.io import file_sha256

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "build_backbone", "load_backbone"]

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class BackboneSpec:
    """What the extractor needs to know of a network: its stream, width and input scaling."""

    name: str
    stream: str  # "rgb" (uint8 frames) or "flow" (fields already in [-1, 1])
    feature_dim: int
    size: int = 226  # default shorter side of the frames
    crop: int = 224  # default centre crop
    # RGB: (x / 255 - mean) / std per channel; mean = std = 0.5 is I3D's x / 255 * 2 - 1
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def scale(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) uint8 RGB (or float flow) -> what the network takes."""
        if self.stream == "flow":
            return clips.float()
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.mean, device=clips.device).view(shape)
        std = torch.tensor(self.std, device=clips.device).view(shape)
        return (clips.float() / 255 - mean) / std

    def describe_scaling(self) -> str:
        if self.stream == "flow":
            return "TV-L1 flow clipped to [-20, 20] / 20"
        if self.mean == (0.5, 0.5, 0.5) and self.std == (0.5, 0.5, 0.5):
            return "x / 255 * 2 - 1"
        return f"(x / 255 - mean) / std, mean {list(self.mean)}, std {list(self.std)}"


_TV = dict(size=128, crop=112, mean=KINETICS_MEAN, std=KINETICS_STD)
BACKBONES: dict[str, BackboneSpec] = {
    "i3d_rgb": BackboneSpec("i3d_rgb", "rgb", FEATURE_DIM),
    "i3d_flow": BackboneSpec("i3d_flow", "flow", FEATURE_DIM),
    "r2plus1d_18": BackboneSpec("r2plus1d_18", "rgb", 512, **_TV),
    "r3d_18": BackboneSpec("r3d_18", "rgb", 512, **_TV),
    "mc3_18": BackboneSpec("mc3_18", "rgb", 512, **_TV),
    "s3d": BackboneSpec(
        "s3d", "rgb", 1024, size=256, crop=224, mean=KINETICS_MEAN, std=KINETICS_STD
    ),
}
# torchvision.models.video: the builder and its weights enum, per name
_TORCHVISION = {
    "r2plus1d_18": ("r2plus1d_18", "R2Plus1D_18_Weights"),
    "r3d_18": ("r3d_18", "R3D_18_Weights"),
    "mc3_18": ("mc3_18", "MC3_18_Weights"),
    "s3d": ("s3d", "S3D_Weights"),
}


@dataclass
class Backbone:
    """A network ready to extract: its spec, the module (eval mode) and where its weights
    came from (``{"path", "sha256"}``, or None for random weights)."""

    spec: BackboneSpec
    module: nn.Module
    weights: dict[str, Any] | None = field(default=None)


def load_backbone(name: str, weights: str | os.PathLike | None = None) -> Backbone:
    """Build ``name`` (a key of :data:`BACKBONES`) with ``weights``; see the module docstring.

    A missing, unreadable or mismatched weights file raises :class:`WeightsError` naming
    the file (and the key), before any video is read.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    record = None
    if name.startswith("i3d_"):
        channels = 3 if spec.stream == "rgb" else 2
        if weights is None:
            module: nn.Module = InceptionI3d(in_channels=channels).eval()
        else:
            module = load_port_weights(weights, in_channels=channels)
            record = {"path": str(Path(weights).resolve()), "sha256": file_sha256(weights)}
    else:
        module, record = _torchvision_backbone(name, weights)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return Backbone(spec, module, record)


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """The network alone: (B, C, T, H, W), scaled as :class:`BackboneSpec` says, -> (B, D)."""
    return load_backbone(name, weights).module


def _import_torchvision_video():
    try:
        import torchvision.models.video as video
    except Exception as err:  # ImportError, or a torchvision built for another torch
        raise ImportError(
            "the torchvision backbones need torchvision, built for the installed torch "
            f"(import failed: {err}); install the matching torchvision, or use "
            "--backbone i3d"
        ) from err
    return video


class _VideoResNetFeatures(nn.Module):
    """torchvision's VideoResNet up to its average pool: (B, 512)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.layer4(n.layer3(n.layer2(n.layer1(n.stem(x)))))
        return n.avgpool(x).flatten(1)


class _S3DFeatures(nn.Module):
    """torchvision's S3D up to its average pool, positions averaged: (B, 1024)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.avgpool(self.net.features(x)).mean(dim=(2, 3, 4))


def _torchvision_backbone(
    name: str, weights: str | os.PathLike | None
) -> tuple[nn.Module, dict[str, Any] | None]:
    video = _import_torchvision_video()
    builder, enum_name = _TORCHVISION[name]
    net = getattr(video, builder)(weights=None)
    record = None
    if weights is not None:
        path = _cached_default(video, enum_name) if str(weights) == "DEFAULT" else Path(weights)
        state = read_state_dict(path)
        check_state_dict(net, state, str(path))
        net.load_state_dict(state, strict=True)
        record = {"path": str(path.resolve()), "sha256": file_sha256(path)}
        if str(weights) == "DEFAULT":
            record["enum"] = f"{enum_name}.DEFAULT"
    wrap = _S3DFeatures if name == "s3d" else _VideoResNetFeatures
    return wrap(net), record


def _cached_default(video, enum_name: str) -> Path:
    """The hub-cache file of torchvision's default weights for this model; never downloads."""
    from urllib.parse import urlparse

    url = getattr(video, enum_name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not path.is_file():
        raise WeightsError(
            f"{enum_name}.DEFAULT is not in torch's hub cache ({path}); fetch it once with "
            f'python -c "from torchvision.models.video import {enum_name} as W; '
            'W.DEFAULT.get_state_dict()", or pass a weights file'
        )
    return path
