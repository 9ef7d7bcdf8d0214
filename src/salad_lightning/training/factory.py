"""`make_training_step`: the strategy a run's settings ask for, chosen once, when the
module is built. Beside the strategies it chooses from, importing each of them (none
imports it back)."""

from __future__ import annotations

from typing import Any

from torch import nn

from salad_lightning.losses.criterion import SaladCriterion
from salad_lightning.losses.frozen import FrozenAlpha
from salad_lightning.training.graphs import GraphStep
from salad_lightning.training.step import CompiledStep, EagerStep, TrainingStep


def make_training_step(
    net: nn.Module,
    criterion: SaladCriterion,
    *,
    compile: bool = False,
    cuda_graph: bool = False,
    frozen: FrozenAlpha | None = None,
    **graph_options: Any,
) -> TrainingStep:
    """The strategy the settings ask for (``model.compile``, ``model.cuda_graph``);
    ``graph_options`` go to the graph strategy (``model.cuda_graph_*``) and only there."""
    if compile and cuda_graph:
        raise ValueError(
            "model.compile=true and model.cuda_graph=true are alternatives (a graph "
            "already removes the launch overhead compile targets); set one to false"
        )
    if cuda_graph:
        return GraphStep(net, criterion, frozen=frozen, **graph_options)
    if compile:
        return CompiledStep(net, criterion, frozen=frozen)
    return EagerStep(net, criterion, frozen=frozen)
