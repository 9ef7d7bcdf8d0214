"""The SALAD network (paper Table 1, docs/method.md §2): a bidirectional GRU and three heads.

Each step's ``2 * hidden_size`` state feeds

- a regression head that outputs ``(a_t, b_t)`` in [0, 1] (sigmoid), the normalised
  distances from step ``t`` to the proposal's start and end
  (:func:`salad_lightning.models.postprocess.offsets_to_segments` scales them by ``W``);
- a self-assessment head that outputs the logit of ``p_t``;
- a classification head that outputs ``K + 1`` logits, column 0 = background.

The heads return logits (not probabilities) for the score and the class so that the
losses can use the numerically stable ``*_with_logits`` forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from salad_lightning.models.postprocess import offsets_to_segments

TEMPORAL_ENCODERS = ("gru", "none")


class SaladOutput(NamedTuple):
    """Per-step network outputs for a (padded) batch."""

    offsets: Tensor  # (B, T, 2) in [0, 1]: (a_t, b_t)
    score_logits: Tensor  # (B, T): p_t = sigmoid(score_logits)
    cls_logits: Tensor  # (B, T, K + 1): softmax -> class probabilities, column 0 = background


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> nn.Sequential:
    """``Linear`` layers ``in_dim -> *hidden_dims -> out_dim`` with ReLU between them.

    No activation after the last layer: the caller applies sigmoid/softmax (or a loss
    on the logits).
    """
    dims = [in_dim, *hidden_dims, out_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class SaladNet(nn.Module):
    """BiGRU memory + regression, self-assessment and classification heads.

    Args:
        input_dim: feature size ``C`` of the input (THUMOS14 I3D: 2048).
        num_classes: number of action classes ``K``; the classification head has
            ``K + 1`` outputs, column 0 is background.
        hidden_size: GRU hidden size per direction; each step's state is
            ``2 * hidden_size`` (paper: 1024, i.e. a 2048-d state).
        reg_dims / sa_dims / cls_dims: hidden layer widths of the regression,
            self-assessment and classification heads (paper Table 1).
        dropout: dropout on the temporal encoder's output (the paper uses none).
        temporal_encoder: ``"gru"`` (the paper) or ``"none"``, a per-step
            ``Linear(input_dim, 2 * hidden_size) + ReLU`` with no temporal context
            (ablation).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_size: int = 1024,
        reg_dims: Sequence[int] = (2048, 1024, 1024),
        sa_dims: Sequence[int] = (2048, 1024, 1024),
        cls_dims: Sequence[int] = (2048, 1024),
        dropout: float = 0.0,
        temporal_encoder: str = "gru",
    ) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, found {input_dim}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, found {num_classes}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, found {hidden_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), found {dropout}")
        if temporal_encoder not in TEMPORAL_ENCODERS:
            raise ValueError(
                f"temporal_encoder must be one of {TEMPORAL_ENCODERS}, found {temporal_encoder!r}"
            )
        self.input_dim = int(input_dim)
        self.num_classes = int(num_classes)
        self.hidden_size = int(hidden_size)
        self.temporal_encoder = temporal_encoder
        # the constructor's arguments: checkpoints carry them, so that testing and
        # predicting rebuild this network whatever the config says (session.py)
        self.config = {
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "hidden_size": self.hidden_size,
            "reg_dims": [int(d) for d in reg_dims],
            "sa_dims": [int(d) for d in sa_dims],
            "cls_dims": [int(d) for d in cls_dims],
            "dropout": float(dropout),
            "temporal_encoder": temporal_encoder,
        }

        state_dim = 2 * self.hidden_size
        if temporal_encoder == "gru":
            self.encoder: nn.Module = nn.GRU(
                input_dim, self.hidden_size, num_layers=1, batch_first=True, bidirectional=True
            )
        else:
            self.encoder = nn.Sequential(nn.Linear(input_dim, state_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.reg_head = mlp(state_dim, reg_dims, 2)
        self.sa_head = mlp(state_dim, sa_dims, 1)
        self.cls_head = mlp(state_dim, cls_dims, self.num_classes + 1)

    def _encode(self, features: Tensor, lengths: Tensor | None) -> Tensor:
        if self.temporal_encoder == "none":
            return self.encoder(features)
        if lengths is None:
            return self.encoder(features)[0]
        T = features.shape[1]
        # Packing needs the lengths on the CPU; a CUDA tensor here costs a host sync.
        # The collate function produces CPU lengths, so normally nothing moves.
        lengths = torch.as_tensor(lengths).cpu().to(torch.int64)
        if lengths.shape != features.shape[:1]:
            raise ValueError(
                f"lengths must have shape ({features.shape[0]},), found {tuple(lengths.shape)}"
            )
        if bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must lie in [1, {T}], found {lengths.tolist()}")
        if bool((lengths == T).all()):
            # Nothing is padded: the unpacked GRU is faster and gives the same result.
            return self.encoder(features)[0]
        packed = pack_padded_sequence(features, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=T)[0]

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> SaladOutput:
        """Run the network on ``features`` (B, T, C).

        ``lengths`` (B,) gives each video's number of valid steps (the rest is
        padding). With padding, the sequences are packed so that the backward GRU
        direction starts at each video's own last step; outputs at padded steps are
        finite but meaningless. ``None`` means every step is valid.
        """
        return self.heads(self.encode(features, lengths))

    def encode(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The temporal encoder's per-step state (B, T, 2 * hidden_size), dropout applied.

        ``forward`` is ``heads(encode(features, lengths))``; training calls the two
        halves separately so that the heads and the loss can be compiled together
        while the GRU stays cuDNN's.
        """
        if features.dim() != 3:
            raise ValueError(f"features must be (B, T, C), found shape {tuple(features.shape)}")
        if features.shape[-1] != self.input_dim:
            raise ValueError(
                f"features have {features.shape[-1]} channels per step, "
                f"expected input_dim={self.input_dim}"
            )
        return self.dropout(self._encode(features, lengths))

    def encode_padded(self, features: Tensor, lengths: Tensor) -> Tensor:
        """``encode(features, lengths)`` without packing: fixed shapes and device-side
        lengths, so that it can be captured in a CUDA graph.

        The forward direction runs over the left-aligned batch (padding after a video
        does not reach its valid steps); the backward direction over a copy with each
        video right-aligned, so that it starts at the video's own last step, as packing
        makes it. One bidirectional call over the 2B rows computes both; the state at
        valid steps is the packed one, at padded steps it is meaningless (masked by the
        loss).
        """
        if self.temporal_encoder == "none":
            return self.encode(features, None)
        b, t, c = features.shape
        steps = torch.arange(t, device=features.device)
        shift = (t - lengths.to(features.device)).unsqueeze(1)  # (B, 1): front padding of the copy
        right = features.gather(1, ((steps - shift) % t).unsqueeze(-1).expand(b, t, c))
        out = self.encode(torch.cat([features, right]), None)  # dropout included
        h = self.hidden_size
        backward = out[b:, :, h:].gather(1, ((steps + shift) % t).unsqueeze(-1).expand(b, t, h))
        return torch.cat([out[:b, :, :h], backward], dim=-1)

    def proposals(
        self, features: Tensor, lengths: Tensor | None, max_offset: float | Tensor
    ) -> tuple[SaladOutput, Tensor]:
        """The outputs and each step's proposal ``[t - a_t W, t + b_t W]`` (B, T, 2) in
        feature-index units, ``W = max_offset`` (docs/method.md §2)."""
        out = self(features, lengths)
        return out, offsets_to_segments(out.offsets, max_offset)

    def heads(self, state: Tensor) -> SaladOutput:
        """The three heads on the encoder's state (B, T, 2 * hidden_size)."""
        return SaladOutput(
            offsets=torch.sigmoid(self.reg_head(state)),
            score_logits=self.sa_head(state).squeeze(-1),
            cls_logits=self.cls_head(state),
        )
