"""How a training batch becomes gradients: the strategies of docs/design.md."""

from salad_lightning.training.factory import make_training_step
from salad_lightning.training.graphs import GraphStep
from salad_lightning.training.step import CompiledStep, EagerStep, HeadLoss, TrainingStep

__all__ = [
    "CompiledStep",
    "EagerStep",
    "GraphStep",
    "HeadLoss",
    "TrainingStep",
    "make_training_step",
]
