"""Literal transcriptions of P-GCN's released code, node by node and loop by loop.

Independent of ``salad_lightning.pgcn``: plain Python lists and floats, the structure of
P-GCN's ``pgcn_dataset.py`` (``PGCNVideoRecord``, ``get_fg``, ``get_negatives``,
``_sample_child_nodes``, ``_sample_proposals_via_graph``, ``_video_centric_sampling``,
``_load_prop_data``, ``_compute_regresssion_stats``), ``pgcn_test.py::sample_child_nodes``,
``ops/detection_metrics.py`` (``segment_tiou``, ``segment_distance``, ``name_proposal``),
``pgcn_models.py`` (the block-diagonal forward) and ``ops/pgcn_ops.py`` (the losses),
kept as written. The tests compare the package with these.

Rules shared with the package, where P-GCN's code is not followed to the letter:

- continuous segments: P-GCN's inclusive ``+1`` frame is left out of lengths,
  intersections and hulls; a distance over a zero-length hull is 0;
- equal tIoUs or distances sort lower index first (P-GCN's ``np.argsort`` is unstable);
- random draws: P-GCN interleaves each centre's draw with its neighbourhood's shuffles;
  here the centres of a video are drawn first (``rng.integers``, slot by slot), then the
  shuffles (``rng.shuffle``, centre by centre, node by node), the order the package
  consumes them in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# --- ops/detection_metrics.py, continuous -------------------------------------------------


def literal_temporal_iou(a, b):
    """``temporal_iou``: 0 unless the spans overlap; intersection over the hull."""
    union = min(a[0], b[0]), max(a[1], b[1])
    inter = max(a[0], b[0]), min(a[1], b[1])
    if inter[0] >= inter[1]:
        return 0.0
    return float(inter[1] - inter[0]) / float(union[1] - union[0])


def literal_segment_tiou(a, b):
    """``segment_tiou`` for one pair: clipped intersection over the union (0 if that is 0)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def literal_distance(a, b):
    """``segment_distance`` for one pair: centre distance over the hull's length."""
    ca = (a[1] - a[0]) / 2 + a[0]
    cb = (b[1] - b[0]) / 2 + b[0]
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return abs(ca - cb) / hull if hull > 0 else 0.0


def literal_matrices(segments):
    segs = [tuple(map(float, s)) for s in segments]
    iou = [[literal_segment_tiou(a, b) for b in segs] for a in segs]
    dis = [[literal_distance(a, b) for b in segs] for a in segs]
    return iou, dis


# --- the graph: pgcn_dataset.py::_sample_child_nodes and pgcn_test.py::sample_child_nodes ---


def _ranked(values, idx, descending):
    return sorted(idx, key=lambda j: (-values[j] if descending else values[j], j))


def literal_slots(
    centre, iou, dis, *, test_time=False, iou_threshold=0.7, iou_num=8, dis_threshold=0.0, dis_num=2
):
    """The ten indices a node's children are drawn from (before P-GCN's shuffle).
    ``test_time``: P-GCN's test script, which takes out (and falls back to) the proposal
    of highest tIoU with the node instead of the node itself."""
    n = len(iou)
    act_iou = list(iou[centre])
    if test_time:
        self_idx = _ranked(act_iou, range(n), descending=True)[0]
    else:
        self_idx = centre
    rm_iou = act_iou.copy()
    rm_iou[self_idx] = 0
    pos_iou_idx = [j for j in range(n) if rm_iou[j] > iou_threshold]
    if pos_iou_idx:
        ranked = _ranked(rm_iou, pos_iou_idx, descending=True)
        abs_iou_idx = (ranked * iou_num)[:iou_num]  # np.tile(sorted, iou_num)[:iou_num]
    else:
        abs_iou_idx = [self_idx] * iou_num
    act_dis = list(dis[centre])
    pos_dis_idx = [j for j in range(n) if act_iou[j] <= 0 and act_dis[j] > dis_threshold]
    if pos_dis_idx:
        ranked = _ranked(act_dis, pos_dis_idx, descending=False)
        abs_dis_idx = (ranked * dis_num)[:dis_num]
    else:
        abs_dis_idx = [self_idx] * dis_num
    return abs_iou_idx + abs_dis_idx


def literal_child_nodes(centre, iou, dis, rng, *, test_time=False, child_num=4):
    """One node's children: its slots shuffled (``np.random.shuffle``), the first four."""
    abs_child_idx = np.array(literal_slots(centre, iou, dis, test_time=test_time))
    rng.shuffle(abs_child_idx)
    return [int(j) for j in abs_child_idx[:child_num]]


def literal_neighbourhood(centre, iou, dis, rng, *, test_time=False, child_num=4):
    """``_sample_proposals_via_graph`` / ``get_adjacent_batch``: 1 + 4 + 16 indices."""
    selected = [centre]
    for stage in range(child_num + 1):
        selected.extend(literal_child_nodes(selected[stage], iou, dis, rng, test_time=test_time))
    return selected


# --- labelling: PGCNVideoRecord, name_proposal, get_fg, get_negatives ----------------------


class Instance:
    def __init__(self, start, end, count, label, best_iou=None, overlap_self=None):
        self.start = start
        self.end = min(end, count)
        self.label = label
        self.coverage = (end - start) / count  # before the cut, as PGCNInstance
        self.best_iou = best_iou
        self.overlap_self = overlap_self
        self.reg = None

    def compute_regression_targets(self, gt_list, fg_thresh):
        if self.best_iou < fg_thresh:
            return
        ious = [literal_temporal_iou((self.start, self.end), (g.start, g.end)) for g in gt_list]
        best = gt_list[int(np.argmax(ious))]
        centre = (self.start + self.end) / 2
        gt_centre = (best.start + best.end) / 2
        size, gt_size = self.end - self.start, best.end - best.start
        self.reg = [(gt_centre - centre) / size, math.log(gt_size / size)]

    def regression_targets(self):
        return self.reg if self.reg is not None else [0.0, 0.0]


def literal_name_proposal(gts, span):
    """(label + 1 or 0, best tIoU, overlap over the proposal) of one proposal."""
    max_overlap, max_overlap_self, label = 0.0, 0.0, 0
    for g_label, g in gts:
        ov = literal_temporal_iou(g, span)
        inter = max(g[0], span[0]), min(g[1], span[1])
        ov_pr = 0.0 if inter[0] >= inter[1] else (inter[1] - inter[0]) / (span[1] - span[0])
        if ov > 0.0 and ov > max_overlap:
            label, max_overlap, max_overlap_self = g_label + 1, ov, ov_pr
    return label, max_overlap, max_overlap_self


class LiteralVideo:
    """PGCNVideoRecord, read from segments instead of a proposal list."""

    def __init__(self, proposals, gt_segments, gt_labels, count):
        kept_gt = [
            (int(lab), (float(s), float(e)))
            for (s, e), lab in zip(gt_segments, gt_labels)
            if e > s and s < count
        ]
        self.gt = [Instance(s, e, count, lab + 1, best_iou=1.0) for lab, (s, e) in kept_gt]
        self.proposals = []
        self.source = []
        for j, (s, e) in enumerate(proposals):
            s, e = float(s), float(e)
            if not (e > s and s < count):
                continue
            label, iou, ov_self = literal_name_proposal(kept_gt, (s, e))
            self.proposals.append(Instance(s, e, count, label, iou, ov_self))
            self.source.append(j)

    def get_fg(self, fg_thresh, with_gt=True):
        fg = [p for p in self.proposals if p.best_iou > fg_thresh]
        if with_gt:
            fg.extend(self.gt)
        for x in fg:
            x.compute_regression_targets(self.gt, fg_thresh)
        return fg

    def get_negatives(self, incomplete_iou, bg_iou, bg_coverage, incomplete_overlap):
        tag = [0] * len(self.proposals)
        incomplete, background = [], []
        for i in range(len(tag)):
            p = self.proposals[i]
            if p.best_iou < incomplete_iou and p.overlap_self > incomplete_overlap:
                tag[i] = 1
                incomplete.append(p)
        for i in range(len(tag)):
            p = self.proposals[i]
            if tag[i] == 0 and p.best_iou < bg_iou and p.coverage > bg_coverage:
                background.append(p)
        return incomplete, background

    def pools(self):
        """[fg, incomplete, bg] with P-GCN's THUMOS14 thresholds."""
        fg = self.get_fg(0.7, True)
        incomplete, bg = self.get_negatives(0.3, 0.01, 0.02, 0.01)
        return [fg, incomplete, bg]


def literal_regression_stats(videos):
    """``_compute_regresssion_stats``: over get_fg(..., False) of every video."""
    targets = []
    for video in videos:
        for p in video.get_fg(0.7, False):
            targets.append(list(p.regression_targets()))
    return np.array((np.mean(targets, axis=0), np.std(targets, axis=0)))


def literal_video_samples(
    video, rng, stats, fg_per_video=1, incomplete_per_video=6, bg_per_video=1
):
    """``_video_centric_sampling`` + ``_load_prop_data`` for one video: a list of
    (21 pool indices, prop_type, label, regression target) and the pool."""
    fg, incomp, bg = video.pools()
    pool = fg + incomp + bg
    pool_list = [fg, incomp, bg]
    requests = []  # (prop_type, type_pool) per slot, as the three loops choose them
    for _ in range(fg_per_video):
        requests.append((0, fg))
    for _ in range(incomplete_per_video):
        requests.append((0, fg) if len(incomp) == 0 else (1, incomp))
    for _ in range(bg_per_video):
        requests.append((0, fg) if len(bg) == 0 else (2, bg))
    centres = []
    for prop_type, type_pool in requests:  # the centres first (the package's draw order)
        ref = int(rng.integers(0, len(type_pool)))
        offset = sum(len(pool_list[k]) for k in range(prop_type))
        centres.append((ref + offset, prop_type))
    segs = [(p.start, p.end) for p in pool]
    iou, dis = literal_matrices(segs)
    samples = []
    for centre, prop_type in centres:
        nodes = literal_neighbourhood(centre, iou, dis, rng)
        prop = pool[centre]
        label = prop.label if prop_type in (0, 1) else 0
        if prop_type == 0:
            reg = prop.regression_targets()
            reg = ((reg[0] - stats[0][0]) / stats[1][0], (reg[1] - stats[0][1]) / stats[1][1])
        else:
            reg = (0.0, 0.0)
        samples.append((nodes, prop_type, label, reg))
    return samples, pool


# --- pgcn_models.py: the block-diagonal forward (eval mode) -------------------------------


def literal_mask(adj_num=21, child_num=4):
    """``mask`` as ``train_forward`` / ``test_forward`` build it."""
    mask = torch.zeros(adj_num, adj_num)
    for stage in range(child_num + 1):
        for ind in range(1 + stage * child_num, 1 + (stage + 1) * child_num):
            mask[stage, ind] = 1 / child_num
        mask[stage, stage] = 1
    return mask


def literal_block_adjacency(fts, adj_num=21, child_num=4):
    """relu(block-diagonal mask * cosine) over the stacked (N * 21, D) features."""
    m = fts.reshape(-1, fts.shape[-1])
    dot = torch.mm(m, m.t())
    len_vec = torch.sqrt(torch.sum(m * m, dim=1)).unsqueeze(0)
    cos = dot / torch.mm(len_vec.t(), len_vec)
    big = m.new_zeros(m.shape[0], m.shape[0])
    mask = literal_mask(adj_num, child_num).to(m.dtype)
    for row in range(m.shape[0] // adj_num):
        big[row * adj_num : (row + 1) * adj_num, row * adj_num : (row + 1) * adj_num] = mask
    return torch.relu(big * cos)


def literal_forward(net, act_fts, comp_fts, adj_num=21, child_num=4):
    """P-GCN's ``test_forward`` with the weights of a ``PGCNNet``: (N, 21, D) inputs."""
    act_ft_mat = act_fts.reshape(-1, act_fts.shape[-1])
    comp_ft_mat = comp_fts.reshape(-1, comp_fts.shape[-1])
    act_adj = literal_block_adjacency(act_fts, adj_num, child_num)
    comp_adj = literal_block_adjacency(comp_fts, adj_num, child_num)

    def gcn(g, x, adj):
        h = torch.relu(torch.mm(adj, torch.mm(x, g.gc1.weight)) + g.gc1.bias)
        return torch.mm(adj, torch.mm(h, g.gc2.weight)) + g.gc2.bias

    act = torch.cat((gcn(net.activity_gcn, act_ft_mat, act_adj), act_ft_mat), dim=-1)
    act = act[:-1:adj_num, :]
    comp = torch.cat((gcn(net.completeness_gcn, comp_ft_mat, comp_adj), comp_ft_mat), dim=-1)
    comp = comp[:-1:adj_num, :]
    raw_act = net.activity_fc(act)
    raw_comp = net.completeness_fc(comp)
    raw_reg = net.regressor_fc(comp).view(-1, net.completeness_fc.out_features, 2)
    return raw_act, raw_comp, raw_reg


# --- ops/pgcn_ops.py: the losses ----------------------------------------------------------


def _ohem_hinge(pred, labels, is_positive, ohem_ratio, group_size):
    n = pred.shape[0]
    losses = [max(0.0, 1 - is_positive * float(pred[i, int(labels[i]) - 1])) for i in range(n)]
    total = 0.0
    keep = max(int(group_size * ohem_ratio), 1)
    for g in range(n // group_size):
        group = sorted(losses[g * group_size : (g + 1) * group_size], reverse=True)
        total += sum(group[:keep])
    return total


def literal_completeness_loss(pred, labels, sample_split=1, group_size=7, ohem_ratio=0.17):
    """``CompletenessLoss.forward`` on (B * 7, K) predictions and (B * 7,) labels."""
    k = pred.shape[1]
    pred = pred.reshape(-1, group_size, k)
    labels = labels.reshape(-1, group_size)
    pos = pred[:, :sample_split].reshape(-1, k)
    neg = pred[:, sample_split:].reshape(-1, k)
    pos_ls = _ohem_hinge(pos, labels[:, :sample_split].reshape(-1), 1, 1.0, sample_split)
    neg_ls = _ohem_hinge(
        neg, labels[:, sample_split:].reshape(-1), -1, ohem_ratio, group_size - sample_split
    )
    pos_cnt = pos.shape[0]
    neg_cnt = max(int(neg.shape[0] * ohem_ratio), 1)
    return pos_ls / float(pos_cnt + neg_cnt) + neg_ls / float(pos_cnt + neg_cnt)


def literal_regression_loss(pred, labels, targets):
    """``ClassWiseRegressionLoss``: the diagonal of pred[:, labels - 1, :], smooth L1 x 2."""
    prep = pred[:, labels - 1, :]
    class_pred = torch.cat(
        (torch.diag(prep[:, :, 0]).view(-1, 1), torch.diag(prep[:, :, 1]).view(-1, 1)), dim=1
    )
    return torch.nn.SmoothL1Loss()(class_pred.view(-1), targets.view(-1)) * 2
