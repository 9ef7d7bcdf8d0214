"""The one way objects are built from configs (Hydra ``_target_``)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig


def build(node: Any, **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` node (recursively; ``_partial_`` honoured)."""
    if node is None:
        return None
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ValueError(f"expected a config node with a _target_, found: {node}")
    return hydra.utils.instantiate(node, _convert_="all", **kwargs)


def build_list(node: Any) -> list[Any]:
    """Instantiate every ``_target_`` node of a group mapping (``logger``, ``callbacks``)."""
    if node is None:
        return []
    items = (
        node.values()
        if isinstance(node, DictConfig)
        else node
        if isinstance(node, ListConfig)
        else []
    )
    return [build(item) for item in items if isinstance(item, DictConfig) and "_target_" in item]
