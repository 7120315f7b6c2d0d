"""`kerasft study`: a tiny head vs full study end to end (its table, its
page in a real browser), a rerun that trains nothing, and the bad values
refused before anything is written."""

from __future__ import annotations

import json
import math
import re

import pytest

from conftest import REPO, TINY, run_cli
from test_report import _check_png, loaded_dom

# TINY at one step per epoch; only the recorders the page reads (weights for
# the per-layer views, embeddings for the k-NN accuracy).
SETS = [
    "data.validation_fraction=0.05",
    "record.embedding_size=12",
    "record.probe_size=8",
    *(f"record.{kind}=false" for kind in (
        "gradients", "update_ratios", "activations", "probe_gradients",
        "batchnorm", "feature_maps", "tensorboard")),
]
FLAGS = [
    *(a for s in SETS for a in ("--set", s)),
    "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "8",
    "--max-train-images", "64", "--max-test-images", "16",
]
assert set(TINY[2:8]) <= set(FLAGS)  # the same tiny data as the other tests


@pytest.fixture(scope="module")
def study(module_tmp):
    """A head vs full study trained through the library API, as
    (study folder, StudyResult, progress lines)."""
    from kerasft.study import run_study

    out = module_tmp / "study" / "s"
    lines = []
    # the overrides in the order the CLI builds them from FLAGS (--set
    # first, then the shorthands), so that the CLI rerun is the same study
    overrides = [*SETS, "train.epochs=1", "train.steps_per_epoch=1",
                 "data.batch_size=8", "data.max_train_images=64",
                 "data.max_test_images=16"]
    result = run_study(REPO / "configs" / "quickstart.yaml", "head,full",
                       out=out, overrides=overrides, report=False,
                       progress=lines.append)
    return out, result, lines


def _cli_study(out, *extra):
    return run_cli(["study", "-c", REPO / "configs" / "quickstart.yaml",
                    "--plans", "head,full", *FLAGS, "--no-report",
                    "--out", out, *extra])


def test_a_study_trains_each_plan_from_one_start_and_tabulates_them(study):
    out, result, lines = study
    assert lines[0].startswith("study: variant 1/2 head lr=0.001 seed=1337")
    assert any(x.startswith("study: variant 2/2 full") for x in lines)
    assert not result.failed
    assert [r["plan"] for r in result.rows] == ["head", "full"]
    for row in result.rows:
        assert row["seeds"] == [1337] and row["lr"] == "0.001"
        for key in ("trainable_params", "wall_seconds", "images_per_second",
                    "best_val_accuracy", "test_accuracy",
                    "train_inference_accuracy", "knn_accuracy"):
            assert math.isfinite(row[key]), (row["plan"], key)
            assert row[f"{key}_std"] is None  # one seed: no spread
    head, full = result.rows
    assert head["trainable_params"] < full["trainable_params"]
    # both variants started from the seed's start (no file passed between
    # them: kerasft.model.init draws it from the seed)
    envs = [json.loads((d / "env.json").read_text()) for d in result.run_dirs]
    assert envs[0]["initial_weights_sha256"] == envs[1]["initial_weights_sha256"]
    assert [e["initial_weights_source"] for e in envs] == ["none", "none"]
    # the verdict reads the table, and says one seed cannot show a spread
    diff = 100 * (full["test_accuracy"] - head["test_accuracy"])
    assert any(f"full fine-tuning: {diff:+.1f} points test accuracy over the "
               "linear probe" in v and "one seed" in v for v in result.verdict)
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][1]["test_accuracy"] == full["test_accuracy"]


def test_the_study_page_loads_in_headless_chromium(study, tmp_path):
    out, result, _ = study
    page = (out / "index.html").read_text()
    for row in result.rows:
        assert f"<td>{row['trainable_params']:,.0f}</td>" in page
    figures = re.findall(r"<img src='(compare/[^']+\.png)'", page)
    # the study's views of the comparison: curves, which layers moved,
    # per-stage change, the embeddings' k-NN accuracy
    for key in ("curves", "layer_change", "stage_change", "knn"):
        assert f"compare/compare_{key}.png" in figures, key
    for src in figures:
        _check_png(out / src)
    dom, images, broken = loaded_dom(out / "index.html", tmp_path / "u1")
    assert images == len(figures) and broken == 0
    assert "id=\"study-table\"" in dom and dom.count("<tr>") >= 3


def test_the_same_command_again_trains_nothing(study):
    out, result, _ = study
    runs = sorted(p.name for p in (out / "runs").iterdir())
    stamps = [(d / "status.json").stat().st_mtime_ns for d in result.run_dirs]
    r = _cli_study(out)
    assert r.code == 0, r
    assert r.out.count("not trained again") == 2, r.out
    assert "kerasft: study page" in r.out
    assert sorted(p.name for p in (out / "runs").iterdir()) == runs
    assert [(d / "status.json").stat().st_mtime_ns
            for d in result.run_dirs] == stamps


def test_other_flags_in_the_same_folder_are_refused(study):
    out, _, _ = study
    before = sorted(p.name for p in out.rglob("*"))
    r = _cli_study(out, "--seeds", "0,1")
    assert r.code == 2
    assert r.err.count("\n") == 1 and r.err.startswith("Error: ")
    assert "--seeds was not given, now 0,1" in r.err and "another --out" in r.err
    assert sorted(p.name for p in out.rglob("*")) == before


@pytest.mark.parametrize("flags, says", [
    (["--plans", "head,linear"], "--plans: expected a comma-separated list "
     "of plan kinds from head, full, phased, scratch. Received: 'head,linear' "
     "('linear' unknown)"),
    (["--plans", "head,head"], "head repeated"),
    (["--plans", "head", "--lrs", "1e-3,-1"], "'-1' is not one"),
    (["--plans", "head", "--seeds", "0,one"], "--seeds: expected a "
     "comma-separated list of integers"),
    (["--plans", "head", "--plan", "full"], "--plan sets one value"),
    # phased needs an epoch after its head phase: refused before training
    (["--plans", "head,phased"], "study variant phased lr=0.001 seed=1337"),
])
def test_bad_values_are_one_line_errors_and_write_nothing(
        cli, tmp_path, flags, says):
    out = tmp_path / "s"
    r = cli(["study", "-c", "quickstart", *flags, "--epochs", "1",
             "--out", out])
    assert r.code == 2, r
    assert r.err.startswith("Error: ") and r.err.count("\n") == 1, r.err
    assert says in r.err, r.err
    assert not out.exists()


@pytest.mark.slow
def test_an_unfinished_study_continues_where_it_stopped(study, tmp_path):
    """A variant interrupted after its checkpoint continues in its own run
    directory; one that failed before any checkpoint trains again from the
    same start into a new one, its failed attempt kept in study.json."""
    import shutil

    out = tmp_path / "s"
    shutil.copytree(study[0], out)
    state = json.loads((out / "study.json").read_text())
    head, full = (out / v["run_dir"] for v in state["variants"])
    for run, what in ((head, "failed"), (full, "interrupted")):
        status = json.loads((run / "status.json").read_text())
        status["state"] = what
        (run / "status.json").write_text(json.dumps(status))
    shutil.rmtree(head / "checkpoints")  # failed before its first one
    state["variants"][0]["state"] = "failed"
    state["variants"][1]["state"] = "interrupted"
    (out / "study.json").write_text(json.dumps(state))
    r = _cli_study(out)
    assert r.code == 0, r
    assert f"continuing {state['variants'][1]['run_dir']}" in r.out
    assert "training it again from the start" in r.out
    after = json.loads((out / "study.json").read_text())
    assert [v["state"] for v in after["variants"]] == ["completed"] * 2
    assert after["variants"][1]["run_dir"] == state["variants"][1]["run_dir"]
    again = out / after["variants"][0]["run_dir"]
    assert again != head
    assert after["variants"][0]["attempts"][0]["run_dir"] == str(
        head.relative_to(out))
    fingerprint = [json.loads((d / "env.json").read_text())[
        "initial_weights_sha256"] for d in (head, again)]
    assert fingerprint[0] == fingerprint[1]


def test_the_scratch_plan_is_the_seeds_random_network_training_whole(
        tmp_path):
    """`scratch` needs no training to check: its validated config."""
    from kerasft.study import plan_study

    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")  # validation checks that it exists
    plan = plan_study(REPO / "configs" / "quickstart.yaml", "head,scratch",
                      seeds="3", out=tmp_path / "s",
                      overrides=[f"model.weights={weights}"])
    head, scratch = plan.configs
    assert head.model.weights == str(weights)
    assert (scratch.model.weights, scratch.plan.kind,
            scratch.plan.batchnorm, scratch.seed) == ("none", "full",
                                                      "train", 3)
    assert not (tmp_path / "s").exists()


def _row(plan, acc, std=None, seeds=(0,), wall=100.0):
    return {"plan": plan, "lr": "0.001", "seeds": list(seeds),
            "test_accuracy": acc, "test_accuracy_std": std,
            "best_val_accuracy": acc, "wall_seconds": wall,
            "train_seconds": wall}


def test_the_verdict_states_the_gain_from_transfer_against_the_spread():
    from kerasft.study.page import verdict

    lines = verdict([_row("head", 0.80, 0.01, (0, 1, 2), 50),
                     _row("full", 0.90, 0.02, (0, 1, 2), 150),
                     _row("scratch", 0.60, 0.05, (0, 1, 2), 150)])
    text = "\n".join(lines)
    assert ("full fine-tuning: +10.0 points test accuracy over the linear "
            "probe (head only) at 3.0x the time; larger than the seed "
            "spread (±3.0 points over 3 seeds)") in text
    assert ("Gain from transfer: full fine-tuning: +30.0 points test "
            "accuracy over training from scratch on the same labels at "
            "1.0x the time; larger than the seed spread (±7.0") in text
    # one seed: the same numbers, said to be possibly noise
    lines = verdict([_row("head", 0.80), _row("scratch", 0.79)])
    assert any(line.startswith("Gain from transfer: linear probe (head "
                               "only): +1.0 points") and "seed noise" in line
               for line in lines), lines
