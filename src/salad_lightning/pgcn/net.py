"""P-GCN's network (``pgcn_models.py``) on batches of 21-node neighbourhoods.

Two GCNs, one on the activity features and one on the completeness features, each with
two graph convolutions ``adj @ h @ W + b`` (input -> 512 -> input size, ReLU and
dropout 0.7 between, nothing after the second); each GCN's output is concatenated with
its input (``[gcn(x), x]``, P-GCN's order). On the centre node:

- activity: dropout 0.8, then a linear layer to K + 1 logits (column 0 background);
- completeness: a linear layer to K logits (no dropout: P-GCN's code drops out the
  activity branch only);
- regression: a linear layer to 2K values read as (K, 2): per class, the centre shift
  and the log length ratio, both normalised (``pgcn/targets.py::RegressionStats``).

Initialisation as P-GCN: the three heads normal(0, 0.001) with zero biases; the graph
convolutions' weights and biases uniform in ``±1 / sqrt(out_features)``.

P-GCN stacks the batch's neighbourhoods into one block-diagonal (21N, 21N) adjacency;
``torch.bmm`` on (N, 21, 21) blocks computes the same. Only the centre's output is read,
and the centre's row of the adjacency reaches nodes 0..4 only (the sampling pattern,
``pgcn/graph.py``), so the first convolution is computed for those five nodes and the
second for the centre, each as ``(adj @ x) @ W`` so that the products with the large
weight matrices run on 5 rows (then 1) instead of 21: the same numbers as the full
product (tests/test_pgcn_net.py checks it against a literal block-diagonal
transcription).

P-GCN's optimiser (``pgcn_train.py``, ``pgcn_opts.py``): SGD, lr 0.01, momentum 0.9,
weight decay 5e-4, the biases at twice the learning rate and without weight decay
(:meth:`PGCNNet.param_groups`), batches of 32 videos (8 samples each), the learning rate
divided by 10 at epochs 15, 30 and 45 of 70, each epoch seeing every training video 20
times (``training_epoch_multiplier``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salad_lightning.pgcn.graph import NUM_CHILDREN, neighbourhood_adjacency, neighbourhood_mask

__all__ = [
    "LR",
    "LR_MILESTONES",
    "MOMENTUM",
    "WEIGHT_DECAY",
    "GraphConvolution",
    "PGCNNet",
    "PGCNOutput",
]

LR = 0.01  # P-GCN's --lr
MOMENTUM = 0.9  # --momentum
WEIGHT_DECAY = 5e-4  # --weight-decay
LR_MILESTONES = (15, 30, 45)  # --lr_steps: lr / 10 at each (epochs 0-based, of 70)


class PGCNOutput(NamedTuple):
    """The centre nodes' outputs: (N, K+1), (N, K), (N, K, 2)."""

    activity_logits: Tensor
    completeness_logits: Tensor
    regression: Tensor


class GraphConvolution(nn.Module):
    """``adj @ x @ weight + bias`` (Kipf & Welling's layer, as P-GCN uses it)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1.0 / math.sqrt(out_features)  # P-GCN: 1 / sqrt(weight.size(1))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        """x (N, n, in), adj (N, m, n) -> (N, m, out); ``(adj @ x) @ W``: m <= n rows here."""
        return torch.bmm(adj, x) @ self.weight + self.bias


class _GCN(nn.Module):
    """Two graph convolutions, evaluated only where the centre's output needs them."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gc1 = GraphConvolution(dim, hidden)
        self.gc2 = GraphConvolution(hidden, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, adj_reach: Tensor) -> Tensor:
        """x (N, n, D); adj_reach (N, r, n): the adjacency's rows of the nodes the centre
        reads, the centre first -> the centre's output (N, D)."""
        h = F.relu(self.gc1(x, adj_reach))  # (N, r, hidden)
        h = F.dropout(h, self.dropout, training=self.training)
        centre_row = adj_reach[:, :1, : adj_reach.shape[1]]  # the centre reads nodes 0..r-1
        return self.gc2(h, centre_row)[:, 0]


class PGCNNet(nn.Module):
    """P-GCN: features of N neighbourhoods -> the centres' activity, completeness, regression.

    ``activity_dim``: the activity feature's size (P-GCN: 1024, one I3D stream);
    ``completeness_dim``: the completeness feature's (None: 3 x that, the start, course
    and end parts); ``num_classes``: K.
    Defaults are P-GCN's: ``hidden=512``, ``gcn_dropout=0.7``, ``dropout=0.8``,
    ``num_children=4`` (21-node neighbourhoods).
    """

    def __init__(
        self,
        activity_dim: int,
        completeness_dim: int | None,
        num_classes: int,
        *,
        hidden: int = 512,
        gcn_dropout: float = 0.7,
        dropout: float = 0.8,
        num_children: int = NUM_CHILDREN,
    ) -> None:
        super().__init__()
        completeness_dim = 3 * activity_dim if completeness_dim is None else completeness_dim
        self.num_classes = num_classes
        self.activity_gcn = _GCN(activity_dim, hidden, gcn_dropout)
        self.completeness_gcn = _GCN(completeness_dim, hidden, gcn_dropout)
        self.dropout = nn.Dropout(dropout)
        self.activity_fc = nn.Linear(2 * activity_dim, num_classes + 1)
        self.completeness_fc = nn.Linear(2 * completeness_dim, num_classes)
        self.regressor_fc = nn.Linear(2 * completeness_dim, 2 * num_classes)
        for fc in (self.activity_fc, self.completeness_fc, self.regressor_fc):
            nn.init.normal_(fc.weight, 0.0, 0.001)
            nn.init.zeros_(fc.bias)
        mask = neighbourhood_mask(num_children)
        self.register_buffer("mask", mask, persistent=False)
        # the nodes the centre's row reaches (itself and its children), centre first
        self.register_buffer("reach", torch.nonzero(mask[0]).flatten(), persistent=False)
        if self.reach[0] != 0 or not torch.equal(self.reach, torch.arange(len(self.reach))):
            raise AssertionError("the sampling pattern must put the centre's children at 1..c")

    def forward(self, activity: Tensor, completeness: Tensor) -> PGCNOutput:
        """activity (N, 21, Da), completeness (N, 21, Dc), node 0 the centre (P-GCN's order)."""
        n = self.mask.shape[0]
        if (
            activity.dim() != 3
            or activity.shape[1] != n
            or completeness.shape[:2] != activity.shape[:2]
        ):
            raise ValueError(
                f"expected activity (N, {n}, Da) and completeness (N, {n}, Dc), found "
                f"{tuple(activity.shape)} and {tuple(completeness.shape)}"
            )
        act_adj = neighbourhood_adjacency(activity, self.mask, rows=self.reach)
        comp_adj = neighbourhood_adjacency(completeness, self.mask, rows=self.reach)
        act = torch.cat([self.activity_gcn(activity, act_adj), activity[:, 0]], dim=-1)
        comp = torch.cat(
            [self.completeness_gcn(completeness, comp_adj), completeness[:, 0]], dim=-1
        )
        regression = self.regressor_fc(comp).view(-1, self.num_classes, 2)
        return PGCNOutput(
            self.activity_fc(self.dropout(act)), self.completeness_fc(comp), regression
        )

    def param_groups(self, lr: float = LR, weight_decay: float = WEIGHT_DECAY) -> list[dict]:
        """P-GCN's two groups for ``torch.optim.SGD``: weights (lr, weight decay), biases
        (2 x lr, no weight decay)."""
        weights = [p for name, p in self.named_parameters() if not name.endswith("bias")]
        biases = [p for name, p in self.named_parameters() if name.endswith("bias")]
        return [
            {"params": weights, "lr": lr, "weight_decay": weight_decay},
            {"params": biases, "lr": 2 * lr, "weight_decay": 0.0},
        ]
