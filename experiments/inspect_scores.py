"""The self-assessment scores p_t = sigmoid(score logit) of a trained run on its test split.

    python experiments/inspect_scores.py RUN_DIR [RUN_DIR ...] [--ckpt checkpoints/last.ckpt]

For each run folder (``config_resolved.yaml`` + a checkpoint), rebuilds the network
and the test datamodule from the resolved config, runs the network over every test
video and prints, over the valid test steps: how many, the largest p_t, its quantiles,
the share of steps at or above soft-NMS's ``min_score`` (the config's
``model.postprocess.min_score``; soft-NMS drops every proposal below it before it
starts) and above 0.5. A run whose every p_t is under ``min_score`` has no detection
at all under the default fusion (``regression``: the proposal score is p_t).

Run from the repository root (the resolved config's paths are relative to it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from salad_lightning.utils.instantiate import build

QUANTILES = (0.5, 0.9, 0.99)


def test_scores(run_dir: Path, ckpt: str, cfg: DictConfig) -> np.ndarray:
    """p_t of every valid step of every test video, in dataloader order (``cfg``: the
    run's config_resolved.yaml)."""
    net = build(cfg.model.net)
    state = torch.load(run_dir / ckpt, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    dm = build(cfg.dataset.datamodule)
    dm.setup("test")
    scores = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            out = net(batch.features, batch.lengths_host)
            p = torch.sigmoid(out.score_logits)
            scores.append(p[batch.frame_mask.bool()].double().numpy())
    return np.concatenate(scores)


def describe(p: np.ndarray, min_score: float) -> str:
    qs = " ".join(f"q{q:g}={np.quantile(p, q):.3g}" for q in QUANTILES)
    return (
        f"steps={p.size} max={p.max():.3g} {qs} "
        f"share>={min_score:g}: {np.mean(p >= min_score):.4f} share>0.5: {np.mean(p > 0.5):.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--ckpt", default="checkpoints/last.ckpt", help="relative to RUN_DIR")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
        min_score = float(cfg.model.postprocess.min_score)
        p = test_scores(run_dir, args.ckpt, cfg)
        print(
            f"{run_dir} (target {cfg.model.loss.target}, seed {cfg.seed}): {describe(p, min_score)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
