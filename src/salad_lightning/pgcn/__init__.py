"""P-GCN (Zeng et al., ICCV 2019), the second stage of the paper's "SALAD + PGCN" row.

Plain numpy / PyTorch pieces, in the order a run uses them:

- :mod:`.proposals`: the proposals file a SALAD run writes for every split, and its reader;
- :mod:`.targets`: labelling a video's proposals against the ground truth, the 8
  training samples per video, the regression targets and their statistics;
- :mod:`.graph`: the proposal graph's edges, the sampled 21-node neighbourhoods, their
  adjacency;
- :mod:`.features`: the activity and completeness features pooled per proposal;
- :mod:`.net`: the network (two GCNs and three heads);
- :mod:`.loss`: activity, completeness (OHEM hinge) and regression losses;
- :mod:`.inference`: class scores, refined boundaries, top-k and per-class NMS.

Defaults are the settings of P-GCN's released THUMOS14 code; the module docstrings say
where this code departs from it and why.

One training video (segments in seconds; ``m`` its ``data.mapping.TimeMapping``, ``x``
its (T, C) features, ``stats = RegressionStats.from_pools(...)`` over the training
videos' pools; P-GCN trains only on videos with ground truth)::

    pool = label_proposals(proposals.segments, gt_seconds, gt_labels, duration)
    act, comp = pool_proposal_features(
        x, m.to_index(pool.segments), bounds=(m.to_index(0.0), m.to_index(duration)))
    centres, kinds = sample_centres(pool, rng)                          # (8,), (8,)
    nodes = sample_neighbourhoods(neighbour_slots(pool.segments), centres, rng)  # (8, 21)
    labels, reg_targets = sample_targets(pool, centres, kinds, stats)
    # the net takes act[nodes] (8, 21, C) and comp[nodes] (8, 21, 3C); pgcn_loss the rest

One test video: the same features for all its P proposals, ``nodes =
sample_neighbourhoods(neighbour_slots(segments), np.arange(P), rng)``, the network on
``act[nodes]``, ``comp[nodes]`` (in chunks), then ``score_proposals`` and ``detections``.
"""

# every module's public names (its ``__all__``), in the order a run uses them
from salad_lightning.pgcn import features, graph, inference, loss, net, proposals, targets
from salad_lightning.pgcn.features import *  # noqa: F403
from salad_lightning.pgcn.graph import *  # noqa: F403
from salad_lightning.pgcn.inference import *  # noqa: F403
from salad_lightning.pgcn.loss import *  # noqa: F403
from salad_lightning.pgcn.net import *  # noqa: F403
from salad_lightning.pgcn.proposals import *  # noqa: F403
from salad_lightning.pgcn.targets import *  # noqa: F403

__all__ = [
    name
    for module in (proposals, targets, graph, features, net, loss, inference)
    for name in module.__all__
]
