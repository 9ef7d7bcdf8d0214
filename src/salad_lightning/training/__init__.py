"""How a training batch becomes gradients: the strategies of docs/design.md."""

from salad_lightning.training.step import (
    CompiledStep,
    EagerStep,
    HeadLoss,
    TrainingStep,
    make_training_step,
)

__all__ = ["CompiledStep", "EagerStep", "HeadLoss", "TrainingStep", "make_training_step"]
