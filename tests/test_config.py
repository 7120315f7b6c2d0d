"""Config loading: shipped configs, overrides, one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kerasft.config import load_config, save_config
from kerasft.errors import ConfigError

from conftest import REPO

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_the_four_required_configs_ship():
    names = {p.stem for p in SHIPPED}
    assert {"cifar10_resnet50", "linear_probe", "full_finetune",
            "quickstart"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_loads_and_round_trips(path, tmp_path, monkeypatch):
    weights = yaml.safe_load(path.read_text())["model"]["weights"]
    overrides = []
    if weights.startswith("runs/"):
        # A fine-tuning config names the pretraining run's folder: before
        # that run exists it is a one-line error naming the folder.
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError, match=f"model.weights.*{weights}"):
            load_config(path)
        overrides = ["model.weights=none"]
    cfg = load_config(path, overrides)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_recipes_say_what_they_do():
    probe = load_config(REPO / "configs/linear_probe.yaml")
    assert (probe.plan.kind, probe.optimizer.name) == ("head", "sgd")
    assert probe.optimizer.momentum == 0.9
    full = load_config(REPO / "configs/full_finetune.yaml")
    assert (full.plan.kind, full.model.arch) == ("full", "resnet50")
    real = load_config(REPO / "configs/cifar10_resnet50.yaml")
    assert (real.model.weights, real.data.name, real.plan.kind) == (
        "imagenet", "cifar10", "phased")
    quick = load_config(REPO / "configs/quickstart.yaml")
    assert (quick.data.source, quick.model.weights) == ("builtin", "none")
    assert "WEIGHTS: none" in (REPO / "configs/quickstart.yaml").read_text()


def test_set_overrides_any_key_with_yaml_typed_values():
    cfg = load_config(
        REPO / "configs/quickstart.yaml",
        ["train.epochs=3", "optimizer.learning_rate=0.05",
         "data.max_train_images=null", "plan.unfreeze=all"],
    )
    assert cfg.train.epochs == 3
    assert cfg.optimizer.learning_rate == 0.05
    assert cfg.data.max_train_images is None
    assert cfg.plan.unfreeze == "all"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("train: {epoch: 3}\n", [], ["unknown key 'train.epoch'"]),
        ("colour: red\n", [], ["unknown key 'colour'"]),
        ("train: {epochs: three}\n", [], ["train.epochs", "'three'", "int"]),
        ("train: {epochs: 0}\n", [], ["train.epochs", "at least 1", "0"]),
        ("data: {image_size: 16}\n", [], ["data.image_size", "at least 32", "16"]),
        ("model: {arch: resnet18}\n", [], ["model.arch", "resnet50", "'resnet18'"]),
        ("data: {source: builtin, name: mnist}\n", [],
         ["data.name", "digits", "'mnist'"]),
        ("model: {weights: /no/such.h5}\n", [], ["model.weights", "/no/such.h5"]),
        ("plan: {kind: phased, head_epochs: 5}\ntrain: {epochs: 5}\n", [],
         ["plan.head_epochs", "5"]),
        ("{}\n", ["train.epochs=-1"], ["--set", "train.epochs", "-1"]),
        ("{}\n", ["nokey"], ["key=value", "'nokey'"]),
        ("train: [1, 2\n", [], ["not valid YAML", "line"]),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, text, overrides, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    message = str(e.value)
    assert "\n" not in message
    if "--set" not in expected and "key=value" not in expected:
        assert str(path) in message
    for part in expected:
        assert part in message


def test_cli_bad_config_exits_2_without_traceback_or_run_dir(cli, tmp_path):
    path = _write(tmp_path, "train: {epochs: 0}\n")
    r = cli(["train", "--config", path, "--out", tmp_path / "runs"])
    assert r.code == 2
    assert r.err.startswith("Error: ") and "Traceback" not in r.err
    assert "train.epochs" in r.err and str(path) in r.err
    assert not (tmp_path / "runs").exists()


def test_cli_flag_overrides_reach_the_config(cli, tmp_path):
    r = cli(["train", "-c", "quickstart", "--image-size", "8",
             "--out", tmp_path])
    assert r.code == 2 and "data.image_size" in r.err and "8" in r.err


def test_cli_unknown_config_name_lists_shipped_ones(cli, tmp_path):
    r = cli(["train", "--config", "nope", "--out", tmp_path])
    assert r.code == 2
    assert "quickstart" in r.err and "'nope'" in r.err
