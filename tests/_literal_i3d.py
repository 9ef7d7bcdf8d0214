"""A literal transcription of the public PyTorch I3D port, the reference for the I3D tests.

Transcribed from piergiaj/pytorch-i3d, ``pytorch_i3d.py`` (classes
``MaxPool3dSamePadding``, ``Unit3D``, ``InceptionModule``, ``InceptionI3d``): the same
attribute names (hence the same state-dict keys as its ``rgb_imagenet.pt`` /
``flow_imagenet.pt``), the same per-input "SAME" padding arithmetic, written out for
each layer as the port does, and the same forward. Only what the features need is kept:
no endpoint selection (the port builds every layer by default), no ``replace_logits``,
and ``extract_features`` (the average pool's output) is the method the tests call.
Independent of ``salad_lightning.extract.i3d``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MaxPool3dSamePadding(nn.MaxPool3d):
    def compute_pad(self, dim, s):
        if s % self.stride[dim] == 0:
            return max(self.kernel_size[dim] - self.stride[dim], 0)
        else:
            return max(self.kernel_size[dim] - (s % self.stride[dim]), 0)

    def forward(self, x):
        (batch, channel, t, h, w) = x.size()
        pad_t = self.compute_pad(0, t)
        pad_h = self.compute_pad(1, h)
        pad_w = self.compute_pad(2, w)
        pad_t_f = pad_t // 2
        pad_t_b = pad_t - pad_t_f
        pad_h_f = pad_h // 2
        pad_h_b = pad_h - pad_h_f
        pad_w_f = pad_w // 2
        pad_w_b = pad_w - pad_w_f
        pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
        x = F.pad(x, pad)
        return super().forward(x)


class Unit3D(nn.Module):
    def __init__(
        self,
        in_channels,
        output_channels,
        kernel_shape=(1, 1, 1),
        stride=(1, 1, 1),
        padding=0,
        activation_fn=F.relu,
        use_batch_norm=True,
        use_bias=False,
        name="unit_3d",
    ):
        super().__init__()
        self._output_channels = output_channels
        self._kernel_shape = kernel_shape
        self._stride = stride
        self._use_batch_norm = use_batch_norm
        self._activation_fn = activation_fn
        self._use_bias = use_bias
        self.name = name
        self.padding = padding
        # padding 0 always: the forward pads from the input's shape
        self.conv3d = nn.Conv3d(
            in_channels=in_channels,
            out_channels=self._output_channels,
            kernel_size=self._kernel_shape,
            stride=self._stride,
            padding=0,
            bias=self._use_bias,
        )
        if self._use_batch_norm:
            self.bn = nn.BatchNorm3d(self._output_channels, eps=0.001, momentum=0.01)

    def compute_pad(self, dim, s):
        if s % self._stride[dim] == 0:
            return max(self._kernel_shape[dim] - self._stride[dim], 0)
        else:
            return max(self._kernel_shape[dim] - (s % self._stride[dim]), 0)

    def forward(self, x):
        (batch, channel, t, h, w) = x.size()
        pad_t = self.compute_pad(0, t)
        pad_h = self.compute_pad(1, h)
        pad_w = self.compute_pad(2, w)
        pad_t_f = pad_t // 2
        pad_t_b = pad_t - pad_t_f
        pad_h_f = pad_h // 2
        pad_h_b = pad_h - pad_h_f
        pad_w_f = pad_w // 2
        pad_w_b = pad_w - pad_w_f
        pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
        x = F.pad(x, pad)
        x = self.conv3d(x)
        if self._use_batch_norm:
            x = self.bn(x)
        if self._activation_fn is not None:
            x = self._activation_fn(x)
        return x


class InceptionModule(nn.Module):
    def __init__(self, in_channels, out_channels, name):
        super().__init__()
        self.b0 = Unit3D(in_channels, out_channels[0], [1, 1, 1], padding=0)
        self.b1a = Unit3D(in_channels, out_channels[1], [1, 1, 1], padding=0)
        self.b1b = Unit3D(out_channels[1], out_channels[2], [3, 3, 3])
        self.b2a = Unit3D(in_channels, out_channels[3], [1, 1, 1], padding=0)
        self.b2b = Unit3D(out_channels[3], out_channels[4], [3, 3, 3])
        self.b3a = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, out_channels[5], [1, 1, 1], padding=0)
        self.name = name

    def forward(self, x):
        b0 = self.b0(x)
        b1 = self.b1b(self.b1a(x))
        b2 = self.b2b(self.b2a(x))
        b3 = self.b3b(self.b3a(x))
        return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
    VALID_ENDPOINTS = (
        "Conv3d_1a_7x7",
        "MaxPool3d_2a_3x3",
        "Conv3d_2b_1x1",
        "Conv3d_2c_3x3",
        "MaxPool3d_3a_3x3",
        "Mixed_3b",
        "Mixed_3c",
        "MaxPool3d_4a_3x3",
        "Mixed_4b",
        "Mixed_4c",
        "Mixed_4d",
        "Mixed_4e",
        "Mixed_4f",
        "MaxPool3d_5a_2x2",
        "Mixed_5b",
        "Mixed_5c",
        "Logits",
        "Predictions",
    )

    def __init__(self, num_classes=400, in_channels=3, dropout_keep_prob=0.5):
        super().__init__()
        self._num_classes = num_classes
        self.end_points = {}  # a plain dict: its modules are registered by build()
        ep = self.end_points
        ep["Conv3d_1a_7x7"] = Unit3D(
            in_channels, 64, [7, 7, 7], stride=(2, 2, 2), padding=(3, 3, 3)
        )
        ep["MaxPool3d_2a_3x3"] = MaxPool3dSamePadding(
            kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0
        )
        ep["Conv3d_2b_1x1"] = Unit3D(64, 64, [1, 1, 1], padding=0)
        ep["Conv3d_2c_3x3"] = Unit3D(64, 192, [3, 3, 3], padding=1)
        ep["MaxPool3d_3a_3x3"] = MaxPool3dSamePadding(
            kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0
        )
        ep["Mixed_3b"] = InceptionModule(192, [64, 96, 128, 16, 32, 32], "Mixed_3b")
        ep["Mixed_3c"] = InceptionModule(256, [128, 128, 192, 32, 96, 64], "Mixed_3c")
        ep["MaxPool3d_4a_3x3"] = MaxPool3dSamePadding(
            kernel_size=[3, 3, 3], stride=(2, 2, 2), padding=0
        )
        ep["Mixed_4b"] = InceptionModule(
            128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64], "Mixed_4b"
        )
        ep["Mixed_4c"] = InceptionModule(
            192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64], "Mixed_4c"
        )
        ep["Mixed_4d"] = InceptionModule(
            160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64], "Mixed_4d"
        )
        ep["Mixed_4e"] = InceptionModule(
            128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64], "Mixed_4e"
        )
        ep["Mixed_4f"] = InceptionModule(
            112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128], "Mixed_4f"
        )
        ep["MaxPool3d_5a_2x2"] = MaxPool3dSamePadding(
            kernel_size=[2, 2, 2], stride=(2, 2, 2), padding=0
        )
        ep["Mixed_5b"] = InceptionModule(
            256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128], "Mixed_5b"
        )
        ep["Mixed_5c"] = InceptionModule(
            256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128], "Mixed_5c"
        )
        self.avg_pool = nn.AvgPool3d(kernel_size=[2, 7, 7], stride=(1, 1, 1))
        self.dropout = nn.Dropout(dropout_keep_prob)
        self.logits = Unit3D(
            384 + 384 + 128 + 128,
            self._num_classes,
            kernel_shape=[1, 1, 1],
            padding=0,
            activation_fn=None,
            use_batch_norm=False,
            use_bias=True,
            name="logits",
        )
        self.build()

    def build(self):
        for k in self.end_points.keys():
            self.add_module(k, self.end_points[k])

    def forward(self, x):
        for end_point in self.VALID_ENDPOINTS:
            if end_point in self.end_points:
                x = self._modules[end_point](x)
        x = self.logits(self.dropout(self.avg_pool(x)))
        return x.squeeze(3).squeeze(3)

    def extract_features(self, x):
        for end_point in self.VALID_ENDPOINTS:
            if end_point in self.end_points:
                x = self._modules[end_point](x)
        return self.avg_pool(x)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial batch-norm statistics, so that every term counts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bn.bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif name.endswith("bn.weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:  # convolution weights (and the logits' bias): keep activations O(1)
                fan_in = int(np.prod(tensor.shape[1:])) if tensor.dim() > 1 else 1
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in**0.5)
    return model.eval()
