"""``python -m salad_lightning.run``: the Hydra entry point (thin on purpose).

All work happens in :mod:`salad_lightning.pipeline`; this file composes the
config from the top-level ``conf/`` folder and returns the sweep objective.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONFIG_DIR = os.environ.get("SALAD_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf"))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from salad_lightning.pipeline import run

    result = run(cfg)
    objective = cfg.get("optimized_metric")
    if objective and isinstance(result, dict):
        value = result.get(objective, result.get("val", {}).get(objective))
        return None if value is None else float(value)
    return None


if __name__ == "__main__":
    main()
