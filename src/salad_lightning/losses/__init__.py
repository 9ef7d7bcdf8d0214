"""SALAD's matching (Algorithm 1) and loss (Eq. 2-4)."""

from salad_lightning.losses.criterion import LossOutput, SaladCriterion
from salad_lightning.losses.matching import MatchResult, greedy_match, segment_tiou

__all__ = ["LossOutput", "MatchResult", "SaladCriterion", "greedy_match", "segment_tiou"]
