"""One run's objects, built from the composed config: data, model, trainer, loggers and
the report writer.

What every mode of :mod:`salad_lightning.pipeline` shares: seeding, the run folder, the
network taken from a checkpoint's saved settings, resuming a run in its own folder, the
pre-flight of the data, the model built with what the data says (its class names, the
longest training ground truth, the videos without features), and loggers that are
closed however the run ends.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from salad_lightning.config import last_checkpoint  # (importing it registers the resolvers)
from salad_lightning.metrics.diagnosis import Bins
from salad_lightning.models.video_fusion import VideoFusion, load_video_fusion
from salad_lightning.report_writer import ReportWriter
from salad_lightning.utils.instantiate import build, build_list
from salad_lightning.utils.io import atomic_write_json, atomic_write_text
from salad_lightning.utils.loggers import closing_loggers, override_key

log = logging.getLogger(__name__)

# keys that may differ between an interrupted run and its resumption (extract: predicting
# on videos only)
RESUMABLE_CHANGES = ("resume", "ckpt_path", "trainer.max_epochs", "paths", "mode", "extract")


def command_line_keys() -> set[str]:
    """The config keys set on the command line (Hydra's task overrides), if Hydra runs."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except (ImportError, ValueError):
        return set()
    return {override_key(o) for o in overrides}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def net_from_checkpoint(cfg: DictConfig, ckpt: str) -> None:
    """Make ``cfg.model.net`` the checkpoint's network (saved as ``net_config``).

    A setting the command line gave that contradicts the checkpoint is an error naming
    the key; so is data that cannot fit the network (``dataset.feature_dim``,
    ``dataset.num_classes``). Settings only the config files gave are replaced by the
    checkpoint's, with a log line. Checkpoints written before ``net_config`` existed keep
    the config's network.
    """
    saved = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("net_config")
    if not saved:
        return
    net, explicit = cfg.model.net, command_line_keys()
    data_keys = {"input_dim": "dataset.feature_dim", "num_classes": "dataset.num_classes"}
    clashes, adopted = [], []
    for key, value in saved.items():
        if key not in net or _plain(net[key]) == value:
            continue
        if key == "input_dim" and net[key] is None:
            continue  # the data's own (a features.json); its features record is checked
        if key in data_keys:
            clashes.append(
                f"{data_keys[key]} (the checkpoint's network takes {value}, found {net[key]})"
            )
        elif f"model.net.{key}" in explicit:
            clashes.append(f"model.net.{key} (checkpoint {value}, command line {_plain(net[key])})")
        else:
            adopted.append(f"{key} {value} (the config says {_plain(net[key])})")
    if clashes:
        raise ValueError(
            f"{ckpt}: the checkpoint's network does not fit the config: "
            + "; ".join(clashes)
            + ". Drop these overrides, or pass the checkpoint's values"
        )
    if adopted:
        log.info("the network is built from the checkpoint: %s", ", ".join(adopted))
    with open_dict(cfg):
        for key, value in saved.items():
            if key not in data_keys:
                cfg.model.net[key] = value


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``resume=RUN``: RUN's last checkpoint, after checking that the config is RUN's
    (``RUN/config_resolved.yaml``; only ``trainer.max_epochs`` and paths may change).
    A key RUN's config lacks (a setting added to the package since RUN began) takes its
    value here, with a log line, unless the command line sets it.
    Else ``ckpt_path`` (training starts from it, in a new folder) or None."""
    resume = cfg.get("resume")
    if not resume:
        ckpt = cfg.get("ckpt_path")
        if ckpt and not Path(ckpt).is_file():
            raise FileNotFoundError(f"ckpt_path {ckpt} does not exist")
        return ckpt
    run = Path(resume)
    last = last_checkpoint(resume)
    # the run's network first: a run started from ckpt_path saved the checkpoint's
    # network in its config_resolved.yaml, which the comparison must see here too
    net_from_checkpoint(cfg, str(last))
    saved_path = run / "config_resolved.yaml"
    if saved_path.is_file():
        saved = _flat(yaml.safe_load(saved_path.read_text()))
        now = _flat(OmegaConf.to_container(cfg, resolve=True))
        explicit = command_line_keys()

        def within(key: str, prefixes) -> bool:
            return any(key == p or key.startswith(f"{p}.") for p in prefixes)

        changed = [
            k
            for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k) and not within(k, RESUMABLE_CHANGES)
        ]
        newer = [k for k in changed if k not in saved and k in now and not within(k, explicit)]
        if newer:
            log.info(
                "resume=%s: settings the run's config does not have, taken as they are here: %s",
                resume,
                ", ".join(f"{k}={now[k]!r}" for k in newer),
            )
        differ = [
            f"{k} ({saved.get(k)!r} there, {now.get(k)!r} here)" for k in changed if k not in newer
        ]
        if differ:
            raise ValueError(
                f"resume={resume}: the config differs from the run's ({saved_path}) in "
                + "; ".join(differ[:8])
                + (f"; ... {len(differ) - 8} more" if len(differ) > 8 else "")
                + ". Pass the run's overrides again (only trainer.max_epochs may change)"
            )
    return str(last)


def keep_csv_rows_before(csv_dir: Path, step: int) -> None:
    """A resumed run re-logs the steps after its checkpoint: drop those rows of the
    interrupted run's ``metrics.csv`` first (the CSV logger then appends)."""
    path = csv_dir / "metrics.csv"
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if r.get("step", "") != "" and int(float(r["step"])) < step]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


class _DropLightningTips(logging.Filter):
    """Lightning's advertisement for another logging service on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_known_notices() -> None:
    """Silence Lightning's notices that say nothing about this run (called where a run
    starts, not at import): the module's own batch transfer wins over the datamodule's
    on purpose (only tensors travel, lit_module.py); the pytree note is Lightning's own;
    the evaluation stores are reduced across processes by torchmetrics, so logging them
    without sync_dist is intended; test, validate and predict build no checkpoint
    callbacks (`make_trainer`), so Lightning's request for them is moot there."""
    for message in (
        ".*overridden `transfer_batch_to_device`.*",
        ".*isinstance\\(treespec, LeafSpec\\)",
        ".*It is recommended to use `self.log\\(.*sync_dist=True",
        ".*callbacks used to create the checkpoint need to be",
    ):
        warnings.filterwarnings("ignore", message=message)
    tips = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in tips.filters):
        tips.addFilter(_DropLightningTips())


def diagnosis_options(node: Any) -> dict[str, Any] | None:
    """DETAD's settings of the config's ``diagnosis`` node as `diagnose`'s keywords;
    None when turned off or absent."""
    if node is None or not node.get("enabled", True):
        return None
    return {
        "tiou_thresholds": tuple(float(t) for t in node.tiou_thresholds),
        **{k: Bins(**node[k]) for k in ("length_bins", "coverage_bins", "instance_bins")},
    }


def prepare(
    cfg: DictConfig, ckpt: str | None = None, stages: Sequence[str] = ()
) -> tuple[Any, Any, Path]:
    """Seed, generate data if the dataset asks for it, build the datamodule, check the
    files of ``stages`` (the pre-flight), build the model with what the data says (the
    checkpoint's network when there is one), write ``config_resolved.yaml``."""
    quiet_known_notices()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    if ckpt is not None:
        net_from_checkpoint(cfg, ckpt)
    adopt_first_stage(cfg)
    datamodule, out_dir = build_data(cfg)
    if stages:
        preflight(datamodule, stages, out_dir)
    model = build_model(cfg, datamodule, stages)
    if rank_zero_only.rank == 0:  # the processes of a DDP job share the folder
        atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return datamodule, model, out_dir


FIRST_STAGE_FILES = ("config_resolved.yaml", "metrics.json", "checkpoints/last.ckpt")


def adopt_first_stage(cfg: DictConfig) -> None:
    """``proposals=RUN``: a second stage runs on its first stage's data. RUN must be a
    finished run folder (its resolved config, test metrics and last checkpoint) with
    proposals (``RUN/proposals/``, ``mode=proposals``); ``cfg.dataset`` becomes RUN's,
    with this command line's ``dataset.*`` overrides on top. Paths in RUN's config that
    are relative to the folder RUN was started from (its ``.hydra/hydra.yaml``) are made
    absolute, so the second stage may start elsewhere."""
    if not cfg.get("proposals"):
        return
    run = Path(str(cfg.proposals))
    if not run.is_dir():
        raise FileNotFoundError(f"proposals={run}: no such run folder")
    missing = [f for f in FIRST_STAGE_FILES if not (run / f).is_file()]
    if missing:
        raise ValueError(
            f"proposals={run}: not a finished first-stage run (no {', '.join(missing)}); give "
            "the folder of a `python -m salad_lightning.run` run that trained and tested"
        )
    if not any((run / "proposals").glob("*.json")):
        raise FileNotFoundError(
            f"proposals={run}: no proposals in {run / 'proposals'}; write them with "
            f"`python -m salad_lightning.run mode=proposals ckpt_path={run}/checkpoints/last.ckpt` "
            "(and the first stage's overrides)"
        )
    saved = yaml.safe_load((run / "config_resolved.yaml").read_text())
    if "dataset" not in saved or "datamodule" not in saved["dataset"]:
        raise ValueError(f"proposals={run}: its config_resolved.yaml has no dataset.datamodule")
    dataset = OmegaConf.create(_absolute_paths(saved["dataset"], _started_in(run)))
    for key in sorted(k for k in command_line_keys() if k.startswith("dataset.")):
        OmegaConf.update(dataset, key[len("dataset.") :], _plain(OmegaConf.select(cfg, key)))
    with open_dict(cfg):
        cfg.dataset = dataset
    log.info("the data of the first stage %s: dataset %s", run, dataset.get("name"))


def _started_in(run: Path) -> Path | None:
    """The folder a Hydra run was started from (``.hydra/hydra.yaml``), if it says."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    cwd = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("cwd")
    return Path(cwd) if cwd else None


def _absolute_paths(node: Any, base: Path | None) -> Any:
    """``node`` with its relative paths that exist under ``base`` made absolute."""
    if isinstance(node, dict):
        return {k: _absolute_paths(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_paths(v, base) for v in node]
    if base is not None and isinstance(node, str) and node and not Path(node).is_absolute():
        if "/" in node and (base / node).exists():
            return str((base / node).resolve())
    return node


def build_model(cfg: DictConfig, datamodule: Any, stages: Sequence[str] = ()) -> Any:
    """``cfg.model`` built with the facts of its data (`SaladDataModule.facts`): the class
    names, the videos without features of the evaluated splits, what the data computes
    for the model when the run fits (SALAD's ``max_offset``) where the config leaves the
    key null, and the diagnosis' thresholds for the stores to match at."""
    facts = datamodule.facts(stages)
    given: dict[str, Any] = {
        "class_names": list(facts.class_names) if facts.class_names is not None else None,
        "ground_truth_only": facts.ground_truth_only,
    }
    for key, value in facts.model_inputs.items():
        if key in cfg.model and cfg.model[key] is None and value is not None:
            given[key] = value
    diagnosis = diagnosis_options(cfg.get("diagnosis"))
    if diagnosis is not None:
        given["extra_tiou_thresholds"] = diagnosis["tiou_thresholds"]
    fusion = load_video_fusion(_video_fusion_node(cfg), given["class_names"])
    if fusion is not None:  # read and checked once, here; the module gets the scores
        given["video_fusion"] = fusion
        _name_videos_without_scores(fusion, datamodule)
    record = facts.features
    if record and record.get("feature_dim") and _left_null(cfg.dataset, "feature_dim"):
        with open_dict(cfg):  # dataset=extracted: the width its features.json gives
            cfg.dataset.feature_dim = int(record["feature_dim"])
    model = build(cfg.model, **given)
    if hasattr(model, "record_features"):  # the checkpoint says which features it learnt on
        model.record_features(record)
    return model


def _video_fusion_node(cfg: DictConfig) -> Any:
    """The post-processing node with the fusion keys: the model's (SALAD reads
    ``model.postprocess``, which may be overridden on its own), else the group's."""
    for node in (cfg.model.get("postprocess"), cfg.get("postprocess")):
        if node is not None and "video_scores" in node:
            return node
    return None


def _split_video_ids(datamodule: Any, split: str) -> list[str]:
    """The video ids of a split the datamodule has built (none when it has not)."""
    dataset = getattr(datamodule, "datasets", {}).get(split)
    return list(dataset.video_ids) if dataset is not None else []


def _name_videos_without_scores(fusion: VideoFusion, datamodule: Any) -> None:
    """Warn, naming them, about the evaluated videos the scores file does not score: they
    keep the model's own classification (the test split's are counted in metrics.json)."""
    for split in ("val", "test", "predict"):
        ids = _split_video_ids(datamodule, split)
        missing = fusion.scores.without_scores(ids)
        if missing and rank_zero_only.rank == 0:
            log.warning(
                "postprocess.video_scores: %d of the %d %s videos have no scores in %s; they "
                "keep the model's own classification: %s%s",
                len(missing), len(ids), split, fusion.scores.source, missing[:10],
                " ..." if len(missing) > 10 else "",
            )  # fmt: skip


def _left_null(node: Any, key: str) -> bool:
    return key in node and not OmegaConf.is_missing(node, key) and node[key] is None


def build_data(cfg: DictConfig) -> tuple[Any, Path]:
    """The datamodule (the dataset generated first when its config asks) and the run
    folder, made."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.dataset.get("generate") is not None:
        build(cfg.dataset.generate)
    node = cfg.get("datamodule") or cfg.dataset.datamodule  # a second stage wraps the dataset's
    return build(node), out_dir


def make_trainer(
    cfg: DictConfig, *, fitting: bool, callbacks: Sequence[Any] = ()
) -> tuple[pl.Trainer, list[Any]]:
    """The trainer and its loggers; the config's callbacks (checkpoints) only when
    fitting, ``callbacks`` always."""
    loggers = build_list(cfg.get("logger"))
    callbacks = [*(build_list(cfg.get("callbacks")) if fitting else []), *callbacks]
    extra = {} if fitting else {"enable_checkpointing": False}
    trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks, **extra)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:  # the whole resolved config goes to every dashboard
        lg.log_hyperparams(resolved)
    return trainer, loggers


@dataclass
class Run:
    """The objects of one run (:func:`session`)."""

    datamodule: Any
    model: Any
    trainer: pl.Trainer
    loggers: list[Any]
    writer: ReportWriter
    out_dir: Path


@contextmanager
def session(
    cfg: DictConfig,
    *,
    ckpt: str | None = None,
    stages: Sequence[str] = (),
    fitting: bool = False,
) -> Iterator[Run]:
    """Datamodule, model, trainer, loggers and report writer of one run, its data checked
    for ``stages``; loggers closed however it ends."""
    datamodule, model, out_dir = prepare(cfg, ckpt, stages)
    log.info("run folder: %s", out_dir.resolve())
    # the report (metrics.json, the table) says which video-level fusion made the detections
    fusion = getattr(model, "video_fusion", None)
    test_ids = _split_video_ids(datamodule, "test") if fusion is not None else None
    writer = ReportWriter(
        out_dir,
        diagnosis=diagnosis_options(cfg.get("diagnosis")),
        num_timelines=int(cfg.get("num_timeline_plots", 4)),
        predict_path=cfg.get("predict_output"),
        min_score=cfg.get("postprocess", {}).get("min_score"),
        video_fusion=fusion.describe(test_ids) if fusion is not None else None,
    )
    trainer, loggers = make_trainer(cfg, fitting=fitting, callbacks=[writer])
    with closing_loggers(loggers):
        yield Run(datamodule, model, trainer, loggers, writer, out_dir)


def preflight(datamodule: Any, stages: list[str], out_dir: Path) -> dict[str, Any]:
    """Check every feature file the run will read, before it reads any (rank zero only:
    the other processes of a DDP run wait for it at the first collective). Writes
    ``data_report.json``; unusable files stop the run, named in the message."""
    if rank_zero_only.rank != 0:
        return {}
    report, problems = datamodule.preflight_report(stages)
    atomic_write_json(out_dir / "data_report.json", report)
    if problems:
        shown = "\n  ".join(p.message() for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(
            f"{len(problems)} feature files cannot be used (all listed in "
            f"{out_dir / 'data_report.json'}):\n  {shown}{more}"
        )
    return report
