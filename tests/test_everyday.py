"""Everyday use: an installed wheel run from anywhere, resume after a kill in the same run
folder, runs started together, the network from the checkpoint, hints that work as typed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _runcfg import REPO, TINY, compose_cfg, run_cli
from salad_lightning.pipeline import run as run_pipeline

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).parent)


# --- the wheel ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel and installed (not editable) into a folder of its own.
    It is built from a copy of the sources, so that setuptools' in-tree build folders
    (``build/``, ``*.egg-info``) are the test's own, never shared with other tests."""
    root = tmp_path_factory.mktemp("wheel")
    tree = root / "tree"
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, tree / name, ignore=junk)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "dist"), str(tree)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next((root / "dist").glob("salad_lightning-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
         str(root / "site"), str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return root / "site"


def _run_installed(site: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m salad_lightning.run ARGS`` from ``site`` alone: the source tree (which
    the development environment puts on the path) is taken off it first."""
    code = (
        "import runpy, sys\n"
        f"sys.path = [p for p in sys.path if p.rstrip('/') != {str(REPO / 'src')!r}]\n"
        "import salad_lightning\n"
        f"assert salad_lightning.__file__.startswith({str(site)!r}), salad_lightning.__file__\n"
        "sys.argv = ['salad-run'] + sys.argv[1:]\n"
        "runpy.run_module('salad_lightning.run', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_the_installed_wheel_runs_from_any_folder_with_its_configs(installed, tmp_path):
    assert (installed / "salad_lightning" / "conf" / "config.yaml").is_file()
    assert (installed / "salad_lightning" / "conf" / "dataset" / "thumos.yaml").is_file()
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    res = _run_installed(installed, TINY, elsewhere)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((elsewhere / "logs" / "runs").glob("*/metrics.json"))
    assert len(runs) == 1 and "test/mAP" in json.loads(runs[0].read_text())
    assert (elsewhere / "data_cache" / "synthetic_tiny_seed0" / "annotations.json").is_file()


def test_a_user_config_folder_adds_a_dataset(installed, tmp_path):
    mine = tmp_path / "my_configs" / "dataset"
    mine.mkdir(parents=True)
    (mine / "my_videos.yaml").write_text(
        "# a dataset of one's own, next to the package's (here: a smaller synthetic one)\n"
        "defaults:\n  - synthetic_tiny\n  - _self_\n\n"
        "name: my_videos\nroot: ${paths.cache_dir}/my_videos\n"
        "generate:\n  num_test_videos: 4\n"
    )
    res = _run_installed(
        installed,
        ["--config-dir", str(tmp_path / "my_configs"), "dataset=my_videos", "debug=tiny"],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(next((tmp_path / "logs" / "runs").glob("*/data_report.json")).read_text())
    assert report["splits"]["test"]["videos"] == 4
    assert (tmp_path / "data_cache" / "my_videos" / "annotations.json").is_file()


def test_the_package_list_covers_every_subpackage():
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    src = REPO / "src"
    found = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")} | {
        "salad_lightning.conf"
    }
    assert listed == found


# --- resume, collisions ------------------------------------------------------------


def _base(root: Path) -> list[str]:
    return [
        f"paths.root_dir={root}",
        f"paths.cache_dir={root.parent / 'cache'}",
        *TINY,
        "trainer.max_epochs=5",
        "+callbacks.killer._target_=_killer.KillAtEpoch",
    ]


def test_a_killed_run_resumes_in_its_folder_and_ends_as_an_uninterrupted_one(tmp_path):
    env = {"PYTHONPATH": TESTS}
    # the uninterrupted run, in this process (the same config, the killer idle)
    full = compose_cfg(tmp_path / "full", _base(tmp_path / "full"))
    run_pipeline(full)
    killed = run_cli(
        _base(tmp_path / "part"), cwd=tmp_path, env={**env, "SALAD_KILL_AT_EPOCH": "3"}
    )
    assert killed.returncode == -signal.SIGKILL
    [run] = list((tmp_path / "part" / "logs" / "runs").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()
    resumed = run_cli([*_base(tmp_path / "part"), f"resume={run}"], cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list((tmp_path / "part" / "logs" / "runs").iterdir()) == [run]  # one run, one folder
    assert "dirpath has changed" not in resumed.stderr
    ref = Path(full.paths.output_dir)
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (ref / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1
    for name in ("metrics.json", "results.json"):
        assert json.loads((run / name).read_text()) == json.loads((ref / name).read_text()), name
    # the CSV log holds every epoch once, as the uninterrupted run's does
    rows = lambda d: (d / "csv" / "metrics.csv").read_text().splitlines()  # noqa: E731
    assert rows(run) == rows(ref)


def test_resuming_drops_the_csv_rows_after_the_checkpoint(tmp_path):
    from salad_lightning.session import keep_csv_rows_before

    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss\n0,0,1.5\n0,4,1.2\n1,5,0.9\n1,7,0.8\n"
    )
    keep_csv_rows_before(tmp_path, 5)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "epoch,step,train/loss",
        "0,0,1.5",
        "0,4,1.2",
    ]


def test_a_resume_with_another_config_is_refused_by_key(tmp_path):
    # a run of one epoch, in this process (trainer.max_epochs may change on resuming)
    first = compose_cfg(tmp_path / "first", [*_base(tmp_path), "trainer.max_epochs=1"])
    run_pipeline(first)
    run = Path(first.paths.output_dir)
    res = run_cli(
        [*_base(tmp_path), f"resume={run}", "model.loss.mu=0.7"],
        cwd=tmp_path,
        env={"PYTHONPATH": TESTS},
    )
    assert res.returncode != 0
    # the one key that differs, named alone
    assert f"the config differs from the run's ({run / 'config_resolved.yaml'}) in " in res.stderr
    assert "in model.loss.mu (0.5 there, 0.7 here). Pass the run's overrides" in res.stderr


def test_a_resume_takes_a_run_made_before_a_setting_existed(tmp_path, caplog):
    """A run begun by an earlier version has no key for a setting added since: resuming
    it takes the setting's value here (logged); setting that key on the command line, or
    changing a key the run has, is refused by name."""
    import torch
    from omegaconf import OmegaConf, open_dict

    from salad_lightning.session import resume_checkpoint

    run = tmp_path / "earlier"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({}, run / "checkpoints" / "last.ckpt")

    def saved_without(cfg, drop: str, **changes) -> None:
        tree = OmegaConf.to_container(cfg, resolve=True)
        group, key = drop.split(".")
        del tree[group][key]
        for dotted, value in changes.items():
            group, key = dotted.split("__")
            tree[group][key] = value
        (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(tree)))

    def resume(cfg):
        with open_dict(cfg):
            cfg.resume = str(run)
        return resume_checkpoint(cfg)

    cfg = compose_cfg(tmp_path, ["dataset=synthetic_tiny"], tiny=False)
    saved_without(cfg, "postprocess.video_fusion")
    caplog.set_level("INFO", logger="salad_lightning")
    assert resume(cfg) == str(run / "checkpoints" / "last.ckpt")
    assert "postprocess.video_fusion='topk'" in caplog.text

    saved_without(cfg, "postprocess.video_fusion", postprocess__video_topk=3)
    with pytest.raises(ValueError, match=r"postprocess.video_topk \(3 there, 2 here\)") as err:
        resume(cfg)
    assert "video_fusion" not in str(err.value)

    cfg = compose_cfg(
        tmp_path, ["dataset=synthetic_tiny", "postprocess.video_fusion=product"], tiny=False
    )
    saved_without(cfg, "postprocess.video_fusion")
    with pytest.raises(
        ValueError, match=r"postprocess.video_fusion \(None there, 'product' here\)"
    ):
        resume(cfg)


def test_a_resume_compares_with_the_network_the_run_was_built_with(tmp_path):
    """A run started from ``ckpt_path`` took the checkpoint's network (hidden_size 16 where
    the config files say 64) and saved it in config_resolved.yaml: resuming it with the
    same command line is no config change."""
    import torch
    from omegaconf import OmegaConf, open_dict

    from salad_lightning.config import _run_dir
    from salad_lightning.session import resume_checkpoint

    cfg = compose_cfg(tmp_path, ["dataset=synthetic_tiny"], tiny=False)
    assert cfg.model.net.hidden_size == 64
    run = tmp_path / "earlier"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"net_config": {"hidden_size": 16}}, run / "checkpoints" / "last.ckpt")
    built = cfg.copy()
    built.model.net.hidden_size = 16
    (run / "config_resolved.yaml").write_text(OmegaConf.to_yaml(built, resolve=True))
    with open_dict(cfg):
        cfg.resume = str(run)
    assert resume_checkpoint(cfg) == str(run / "checkpoints" / "last.ckpt")
    assert cfg.model.net.hidden_size == 16
    # a mistyped RUN fails in the run_dir resolver, before Hydra makes a folder for it
    assert _run_dir(str(run), "logs") == str(run)
    with pytest.raises(FileNotFoundError, match=r"resume=.*earlie/checkpoints/last.ckpt"):
        _run_dir(str(tmp_path / "earlie"), "logs")


def test_runs_started_together_get_their_own_folders(tmp_path):
    base = [f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", *TINY]
    # the dataset exists before the race (made by an in-process check elsewhere)
    run_pipeline(
        compose_cfg(tmp_path / "check", ["mode=check", f"paths.cache_dir={tmp_path / 'cache'}"])
    )
    env = {**os.environ, "WANDB_MODE": "offline", "MPLBACKEND": "Agg"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "salad_lightning.run", *base, f"seed={s}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for s in (1, 2)
    ]
    for p in procs:
        p.communicate(timeout=600)
        assert p.returncode == 0
    folders = [p.parent for p in (tmp_path / "logs" / "runs").glob("*/metrics.json")]
    assert len(folders) == 2
    seeds = sorted(
        json.loads(
            json.dumps(
                __import__("yaml").safe_load((f / "config_resolved.yaml").read_text())["seed"]
            )
        )
        for f in folders
    )
    assert seeds == [1, 2]
    for f in folders:
        log = (f / "run.log").read_text()
        assert f"run folder: {f}" in log  # its own lines only
        assert sum(f"run folder: {g}" in log for g in folders) == 1
        assert (f / "results.json").is_file()


def test_the_console_says_where_things_are(tmp_path):
    res = run_cli(
        [f"paths.root_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'c'}", *TINY], cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    [run] = list((tmp_path / "logs" / "runs").iterdir())
    assert res.stdout.count(f"run folder: {run}") == 2  # at the start and at the end
    assert "test mAP (%)" in (run / "run.log").read_text()
    for noise in ("litlogger", "dirpath has changed", "Test metric"):
        assert noise not in res.stdout + res.stderr, noise


# --- the network from the checkpoint; hints -----------------------------------------


def test_test_and_predict_build_the_network_from_the_checkpoint(tmp_path):
    cfg = compose_cfg(tmp_path / "train", [])  # debug=tiny: hidden_size 16
    trained = run_pipeline(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    # without debug=tiny the config says hidden_size 64: the checkpoint's 16 is used
    again = compose_cfg(
        tmp_path / "test", ["dataset=synthetic_tiny", "mode=test", f"ckpt_path={ckpt}"], tiny=False
    )
    assert again.model.net.hidden_size == 64
    summary = run_pipeline(again)
    assert summary["test/mAP"] == pytest.approx(trained["test/mAP"], abs=1e-9)
    # a command-line setting that contradicts the checkpoint is named
    clash = compose_cfg(
        tmp_path / "clash",
        [*TINY, "mode=test", f"ckpt_path={ckpt}", "model.net.hidden_size=32"],
        tiny=False,
    )
    with pytest.raises(
        ValueError, match=r"model.net.hidden_size \(checkpoint 16, command line 32\)"
    ):
        run_pipeline(clash)
    wrong_data = compose_cfg(
        tmp_path / "d",
        [*TINY, "mode=test", f"ckpt_path={ckpt}", "dataset.feature_dim=8"],
        tiny=False,
    )
    with pytest.raises(
        ValueError, match=r"dataset.feature_dim \(the checkpoint's network takes 16, found 8\)"
    ):
        run_pipeline(wrong_data)


def _hint(message: str) -> str:
    """The ``key=value`` an error message tells the user to set."""
    import re

    return re.search(r"set ([\w.]+=\S+?)[;,.)]?(?:\s|$)", message).group(1)


def test_the_missing_features_hint_works_as_typed(tmp_path):
    base = [*TINY, "trainer.max_epochs=1"]
    cfg = compose_cfg(tmp_path, ["mode=check", *base])
    run_pipeline(cfg)  # generate the data, then lose a test video's features
    feats = tmp_path / "cache" / "synthetic_tiny_seed0" / "features"
    victim = sorted(feats.glob("synth_test_*.npy"))[0]
    victim.unlink()
    with pytest.raises(ValueError, match=rf"{victim} \(video \w+, test\): no feature file") as err:
        run_pipeline(compose_cfg(tmp_path, base))  # the pre-flight names it
    hint = _hint(str(err.value))
    assert hint == "dataset.datamodule.skip_missing=true"
    summary = run_pipeline(
        compose_cfg(tmp_path / "again", [*base, hint, f"paths.cache_dir={tmp_path / 'cache'}"])
    )
    assert 0.0 <= summary["test/mAP"] <= 1.0


def test_the_class_count_hint_works_as_typed(tmp_path, make_folder):
    videos = {
        f"v{i}": {"subset": "train" if i < 6 else "test", "duration": 60.0, "fps": 30,
                  "annotations": [{"label": f"class{i % 4}", "segment": [5.0, 15.0]}]}
        for i in range(9)
    }  # fmt: skip
    folder = make_folder(videos, dim=8)
    base = [
        "dataset=custom_template",
        f"dataset.datamodule.annotation_file={folder.annotation_file}",
        f"dataset.datamodule.feature_dir={folder.feature_dir}",
        "dataset.feature_dim=8",
        "debug=tiny",
        "dataset.datamodule.num_workers=0",
    ]
    with pytest.raises(ValueError) as err:
        run_pipeline(compose_cfg(tmp_path, [*base, "dataset.num_classes=3"], tiny=False))
    hint = _hint(str(err.value))
    assert hint == "dataset.num_classes=4"
    summary = run_pipeline(compose_cfg(tmp_path / "ok", [*base, hint], tiny=False))
    assert 0.0 <= summary["test/mAP"] <= 1.0


def test_predict_on_features_alone_with_the_documented_command(tmp_path):
    cfg = compose_cfg(tmp_path / "train", [])
    run_pipeline(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    video = tmp_path / "new_video.npy"
    np.save(video, np.random.default_rng(0).standard_normal((300, 16), dtype=np.float32))
    # README: python -m salad_lightning.run mode=predict ckpt_path=... dataset.datamodule.predict_path=...
    # (the dataset's annotation file is not on this machine)
    res = run_cli(
        [f"paths.root_dir={tmp_path / 'p'}", f"paths.cache_dir={tmp_path / 'nothing'}",
         "dataset=synthetic_tiny", "~dataset.generate", "mode=predict", f"ckpt_path={ckpt}",
         f"dataset.datamodule.predict_path={video}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    for noise in ("callbacks used to create the checkpoint", "dirpath has changed"):
        assert noise not in res.stderr
    [results] = list((tmp_path / "p" / "logs" / "runs").glob("*/results.json"))
    assert list(json.loads(results.read_text())["results"]) == ["new_video"]


def test_a_run_inside_the_classification_pretraining_warns(tmp_path):
    cfg = compose_cfg(tmp_path, ["model.cls_pretrain_epochs=2", "trainer.max_epochs=2"])
    with pytest.warns(UserWarning, match=r"trainer.max_epochs=2 <= model.cls_pretrain_epochs=2"):
        run_pipeline(cfg)


def test_a_run_with_no_detection_says_why(tmp_path, caplog):
    caplog.set_level("WARNING", logger="salad_lightning")
    cfg = compose_cfg(tmp_path, ["postprocess.min_score=1.01"])
    summary = run_pipeline(cfg)
    assert summary["test/mAP"] == 0.0
    # no detection, no calibration error: null in metrics.json, which stays strict JSON
    text = (Path(cfg.paths.output_dir) / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert metrics["test/ece"] is None
    [msg] = [r.getMessage() for r in caplog.records if "no detection" in r.getMessage()]
    assert "postprocess.min_score is 1.01" in msg
    best = float(msg.split("before NMS, was ")[1].split(";")[0])
    assert 0.0 < best < 1.0  # the self-assessment score of the best proposal, under the floor
