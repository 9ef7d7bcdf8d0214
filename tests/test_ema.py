"""The weight average (salad_lightning/ema.py, `callbacks=ema`): the average by hand,
validation and checkpoints on it, resume, manual optimisation, `mode=test`, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from _runcfg import TINY, compose_cfg, run_cli
from salad_lightning.ema import (
    LightningEMA,
    SmallEMA,
    averaged_state,
    ema_avg_fn,
    evaluated_weights,
    weight_ema,
)
from salad_lightning.pipeline import run as run_pipeline

IMPLEMENTATIONS = [c for c in (LightningEMA, SmallEMA) if c is not None]


class Descent(pl.LightningModule):
    """One weight w = 0 with loss w: plain SGD at lr 1 makes w = -t after t steps. A
    buffer counts the steps (the average copies buffers, it does not average them)."""

    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("steps", torch.zeros(1))
        self.automatic_optimization = not manual
        self.seen_in_validation: list[float] = []
        self.seen_in_test: list[float] = []

    def training_step(self, batch, batch_idx):
        self.steps += 1
        loss = self.w.sum()
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return None

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation.append(float(self.w))

    def test_step(self, batch, batch_idx):
        self.seen_in_test.append(float(self.w))

    def test_dataloader(self):
        return self.val_dataloader()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return DataLoader(torch.zeros(2, 1), batch_size=1)  # two steps per epoch

    def val_dataloader(self):
        return DataLoader(torch.zeros(1, 1), batch_size=1)


def _fit(tmp_path: Path, callback, module, epochs: int, ckpt: str | None = None):
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="last", save_top_k=1)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback, saver],
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, ckpt_path=ckpt)
    _fit.trainer = trainer  # the test after fitting reuses it
    return torch.load(tmp_path / "last.ckpt", weights_only=False)


# decay 1/2; the weights after steps 1..4 are -1, -2, -3, -4 (loss w, lr 1), so the average
# is -1 (the first update copies), (-1 - 2)/2 = -1.5, (-1.5 - 3)/2 = -2.25, (-2.25 - 4)/2 = -3.125
@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_the_average_is_the_hand_computed_one(tmp_path, cls, manual):
    module = Descent(manual=manual)
    callback = cls(decay=0.5)
    ckpt = _fit(tmp_path, callback, module, epochs=2)
    # validation after steps 2 and 4 saw the average; training went on from the raw
    # weights (had it kept the average, step 3 would have given -2.5)
    assert module.seen_in_validation == [-1.5, -3.125]
    assert ckpt["state_dict"]["w"].tolist() == [-3.125]
    assert ckpt["current_model_state"]["w"].tolist() == [-4.0]
    assert int(ckpt["averaging_state"]["n_averaged"]) == 4
    # the buffer is the raw one (averaged it would be 3.125)
    assert ckpt["state_dict"]["steps"].tolist() == [4.0]
    assert averaged_state(callback)["w"].tolist() == [-3.125]
    # after fitting, the module holds the average (Lightning's rule)
    assert module.w.tolist() == [-3.125]


class SeenAtEpochEnd(pl.Callback):
    """Records w inside `evaluated_weights` at each training epoch's end (as the train
    fit evaluates), and after it."""

    def __init__(self) -> None:
        self.inside: list[float] = []
        self.after: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with evaluated_weights(trainer, pl_module):
            self.inside.append(float(pl_module.w))
        self.after.append(float(pl_module.w))


@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_the_weights_evaluated_between_validations_are_the_average(tmp_path, cls):
    """`evaluated_weights` (the train fit's): the average inside the block, the raw
    weights back after it, so that training goes on from them; the module's own weights
    without an EMA callback."""

    def fit(*callbacks) -> Descent:
        module = Descent()
        pl.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False,
            callbacks=list(callbacks), default_root_dir=tmp_path,
        ).fit(module)  # fmt: skip
        return module

    seen, plain = SeenAtEpochEnd(), SeenAtEpochEnd()
    module = fit(cls(decay=0.5), seen)
    assert seen.inside == [-1.5, -3.125] and seen.after == [-2.0, -4.0]
    assert module.seen_in_validation == [-1.5, -3.125]  # the same weights validation saw
    fit(plain)
    assert plain.inside == plain.after == [-2.0, -4.0]


@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_testing_a_checkpoint_after_fitting_tests_the_average(tmp_path, cls):
    """As the pipeline tests a run's last checkpoint: with the trainer that fitted (its
    EMA callback holds an average), `trainer.test(ckpt_path=...)` evaluates the
    checkpoint's state_dict, the average, not its raw weights."""
    module = Descent()
    _fit(tmp_path, cls(decay=0.5), module, epochs=2)
    module.w.data.fill_(7.0)  # whatever the module holds, the checkpoint's average wins
    _fit.trainer.test(module, ckpt_path=str(tmp_path / "last.ckpt"), verbose=False)
    assert module.seen_in_test == [-3.125]


@pytest.mark.parametrize(
    "first,second",
    [(c, c) for c in IMPLEMENTATIONS] + [(SmallEMA, LightningEMA)] * (LightningEMA is not None),
    ids=lambda c: c.__name__,
)
def test_resuming_continues_the_average_bit_for_bit(tmp_path, first, second):
    full = _fit(tmp_path / "full", first(decay=0.3), Descent(), epochs=3)
    _fit(tmp_path / "part", first(decay=0.3), Descent(), epochs=1)
    resumed = _fit(
        tmp_path / "part", second(decay=0.3), Descent(), epochs=3,
        ckpt=str(tmp_path / "part" / "last.ckpt"),
    )  # fmt: skip
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert resumed[key].keys() == full[key].keys()
        for name in full[key]:
            assert torch.equal(resumed[key][name], full[key][name]), (key, name)
    # decay 0.3: -1, 0.3 * -1 + 0.7 * -2 = -1.7, ..., six steps
    expected = -1.0
    for t in range(2, 7):
        expected = 0.3 * expected + 0.7 * -t
    assert full["state_dict"]["w"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "options,average,updates",
    [
        # after the optimiser steps of zero-based index 0 and 2: weights -1, -3
        ({"update_every_n_steps": 2}, -2.0, 2),  # -1, then (-1 - 3) / 2
        # from index 1 on: -2, -3, -4
        ({"update_starting_at_step": 1}, -3.25, 3),  # -2, -2.5, (-2.5 - 4) / 2
    ],
)
def test_updates_start_and_skip_as_asked(tmp_path, options, average, updates):
    ckpt = _fit(tmp_path, weight_ema(decay=0.5, **options), Descent(), epochs=2)
    assert ckpt["state_dict"]["w"].tolist() == [average]
    assert int(ckpt["averaging_state"]["n_averaged"]) == updates


def test_the_factory_and_its_checks():
    assert type(weight_ema()) is (LightningEMA or SmallEMA)
    assert weight_ema().decay == 0.999
    avg = ema_avg_fn(0.25)(torch.tensor([4.0]), torch.tensor([8.0]), torch.tensor(1))
    assert avg.tolist() == [7.0]  # 0.25 * 4 + 0.75 * 8
    with pytest.raises(ValueError, match=r"callbacks.ema.decay must be in \[0, 1\], found 1.5"):
        weight_ema(decay=1.5)
    with pytest.raises(ValueError, match="update_every_n_steps must be an integer >= 1, found 0"):
        weight_ema(update_every_n_steps=0)
    with pytest.raises(ValueError, match="update_starting_at_step must be >= 0, found -1"):
        SmallEMA(update_starting_at_step=-1)


def test_the_config_entry_adds_the_average_to_the_default_callbacks(tmp_path):
    cfg = compose_cfg(tmp_path, ["callbacks=ema", "callbacks.ema.decay=0.99"])
    assert {"best_checkpoint", "last_checkpoint", "train_fit", "ema"} <= set(cfg.callbacks)
    from salad_lightning.utils.instantiate import build_list

    built = build_list(cfg.callbacks)
    [ema] = [c for c in built if isinstance(c, (LightningEMA or SmallEMA))]
    assert ema.decay == 0.99
    assert "ema" not in compose_cfg(tmp_path, []).callbacks


# ---------------------------------------------------------------- end to end (SALAD)
DATA = [
    # testing on the training videos gives a tiny model a non-zero mAP within a few epochs
    "dataset.datamodule.test_subset=Validation",
]


def _params_differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_mode_test_evaluates_the_average(tmp_path):
    train = compose_cfg(
        tmp_path / "train",
        ["trainer.max_epochs=6", "callbacks=ema", "callbacks.ema.decay=0.9", *DATA],
    )
    trained = run_pipeline(train)
    out = Path(train.paths.output_dir)
    ckpt_path = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert _params_differ(ckpt["state_dict"], ckpt["current_model_state"])

    def test_of(name: str, state: dict | None) -> tuple[dict, Path]:
        path = ckpt_path
        if state is not None:  # a checkpoint that holds these weights and no average
            plain = {
                k: v for k, v in ckpt.items() if k not in ("current_model_state", "averaging_state")
            }
            path = tmp_path / f"{name}.ckpt"
            torch.save({**plain, "state_dict": state}, path)
        cfg = compose_cfg(tmp_path / name, ["mode=test", f"ckpt_path={path}", *DATA])
        return run_pipeline(cfg), Path(cfg.paths.output_dir)

    ema, ema_dir = test_of("ema", None)
    average, average_dir = test_of("average", ckpt["state_dict"])
    raw, raw_dir = test_of("raw", ckpt["current_model_state"])
    # the EMA checkpoint is tested on its average, exactly, and not on the raw weights
    read = lambda d: (d / "results.json").read_text()  # noqa: E731
    assert read(ema_dir) == read(average_dir) == read(out)
    assert ema == {**average} and ema["test/mAP"] == trained["test/mAP"]
    assert read(raw_dir) != read(ema_dir) and raw["test/ece"] != ema["test/ece"]

    # and validation during training was the average's: mode=validate of the last
    # checkpoint gives the last epoch's logged values
    cfg = compose_cfg(tmp_path / "validate", ["mode=validate", f"ckpt_path={ckpt_path}", *DATA])
    assert run_pipeline(cfg)["val"] == pytest.approx(trained["val"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["model.cuda_graph=true"]], ids=["automatic", "manual"])
def test_a_resumed_run_continues_the_same_average(tmp_path, extra):
    """4 epochs, and 2 then `resume=RUN trainer.max_epochs=4`: the same average, raw
    weights and update count, bit for bit (CPU; manual optimisation: `model.cuda_graph`,
    eager here)."""
    base = ["callbacks=ema", "callbacks.ema.decay=0.9", *extra]
    full = compose_cfg(tmp_path / "full", ["trainer.max_epochs=4", *base])
    run_pipeline(full)
    part = compose_cfg(tmp_path / "part", ["trainer.max_epochs=2", *base])
    run_pipeline(part)
    folder = Path(part.paths.output_dir)
    resumed = compose_cfg(tmp_path / "part", ["trainer.max_epochs=4", f"resume={folder}", *base])
    run_pipeline(resumed)
    a, b = (
        torch.load(Path(p) / "checkpoints" / "last.ckpt", weights_only=False)
        for p in (full.paths.output_dir, folder)
    )
    assert int(a["averaging_state"]["n_averaged"]) == 4 * 3  # 9 training videos, batches of 4
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert _params_differ(a["state_dict"], a["current_model_state"])


@pytest.mark.slow
@pytest.mark.ddp
def test_under_ddp_validation_and_checkpoints_hold_the_average(tmp_path):
    """Two gloo processes keep the same average: the DDP run's validation values equal one
    process's validation of its checkpoint (whose state_dict is the average)."""
    base = [f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", *TINY]
    data = ["dataset.generate.num_train_videos=14", "dataset.datamodule.val_subset=Validation"]
    res = run_cli(
        ["trainer=ddp_cpu", *base, "trainer.max_epochs=3", "test_after_training=false",
         "callbacks=ema", "callbacks.ema.decay=0.9", *data],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    [metrics] = list((tmp_path / "logs" / "runs").glob("*/metrics.json"))
    ddp_val = json.loads(metrics.read_text())["val"]
    ckpt_path = metrics.parent / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert _params_differ(ckpt["state_dict"], ckpt["current_model_state"])
    cfg = compose_cfg(tmp_path / "single", ["mode=validate", f"ckpt_path={ckpt_path}", *data])
    single = run_pipeline(cfg)["val"]
    assert single == pytest.approx(ddp_val, abs=1e-9)
    assert single["val/ece"] > 0.0
