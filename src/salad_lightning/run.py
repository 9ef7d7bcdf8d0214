"""``python -m salad_lightning.run``: the Hydra entry point (thin on purpose).

All work happens in :mod:`salad_lightning.pipeline`; this file composes the
config (:func:`salad_lightning.config.config_dir`: the package's ``conf/``; add a
folder of your own with ``--config-dir DIR``) and returns the sweep objective.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from salad_lightning.config import config_dir

CONFIG_DIR = config_dir()


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
