"""kerasft compare: tolerance tiers from configs, exit codes, self-compares,
output folders and the page's figures (no second training: copies of the
session's recorded run)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import run_cli

LIGHT = ("config.yaml", "env.json", "data.json", "metrics.csv", "status.json")


def _copy(run, parent, name=None, records=False):
    """A copy of a run dir: its JSON/CSV files (and the store if asked)."""
    dst = parent / (name or run.name)
    dst.mkdir(parents=True)
    for f in LIGHT:
        if (run / f).exists():
            shutil.copy(run / f, dst / f)
    if records:
        shutil.copytree(run / "record", dst / "record")
    return dst


class _Run:
    def __init__(self, **sections):
        self.config = sections


@pytest.mark.parametrize("a, b, name", [
    ({}, {}, "number for number"),  # config defaults: SGD, BN inference
    ({"plan": {"kind": "full", "batchnorm": "inference"}}, {},
     "number for number"),
    ({"plan": {"kind": "full", "batchnorm": "train"}}, {}, "same shape"),
    # a phased plan trains only the head in epoch 1: BN is not training
    ({"plan": {"kind": "phased", "head_epochs": 1, "batchnorm": "train"}},
     {}, "number for number"),
    ({"plan": {"kind": "head", "batchnorm": "train"}}, {},
     "number for number"),
    ({"optimizer": {"name": "adam"}}, {"optimizer": {"name": "adam"}},
     "number for number, Adam"),
    ({"plan": {"kind": "full", "batchnorm": "train"},
      "train": {"precision": "mixed_bfloat16"}}, {},
     "same shape + mixed precision"),
])
def test_the_tier_follows_the_runs_configs_and_says_why(a, b, name):
    from kerasft.compare import tolerances as t

    tier = t.tier_for(_Run(**a), _Run(**b))
    assert tier.name == name
    assert tier.reason
    if name == "number for number":
        assert tier.loss_after_epoch_rel == t.LOSS_AFTER_EPOCH_REL
        assert "SGD" in tier.reason
        return
    # every looser tier is looser where it says it is, never stricter
    for bound in ("activation_epoch0_rel", "probe_gradient_epoch0_rel",
                  "loss_after_epoch_rel", "hist_after_epoch_bins"):
        assert getattr(tier, bound) >= getattr(t.FLOAT32, bound)
    assert tier.loss_after_epoch_rel > t.LOSS_AFTER_EPOCH_REL
    assert tier.hist_after_epoch_bins > t.HIST_AFTER_EPOCH_BINS
    words = {"same shape": "BatchNorm", "Adam": "Adam",
             "mixed precision": "16 bits"}
    for part in name.split(" + "):
        key = "Adam" if "Adam" in part else part
        assert words[key] in tier.reason, (part, tier.reason)
    if "mixed" in name:
        assert tier.loss_after_epoch_rel == max(t.MIXED.loss_after_epoch_rel,
                                                t.SAME_SHAPE.loss_after_epoch_rel)


def test_compare_with_itself_says_so(recorded_run, tmp_path):
    out = tmp_path / "self"
    r = run_cli(["compare", recorded_run, recorded_run, "--out", out,
                 "--check"])
    assert r.code == 0, r
    assert "same run" in r.out and "the same directory" in r.out
    assert "FAILED" not in r.out
    page = (out / "index.html").read_text()
    assert "same run" in page and " tier <b>" in page
    for png in ("compare_curves", "compare_hist_distance"):
        assert (out / f"{png}.png").stat().st_size > 10_000, png
    # a copy with the same run id elsewhere is one run too
    copy = _copy(recorded_run, tmp_path / "elsewhere")
    r = run_cli(["compare", recorded_run, copy, "--out", tmp_path / "c2"])
    assert r.code == 0 and "same run id" in r.out, r


def test_check_exits_1_on_a_failed_check_and_0_otherwise(recorded_run,
                                                         tmp_path):
    a = _copy(recorded_run, tmp_path, "run-a")
    same = _copy(recorded_run, tmp_path, "run-b")
    moved = _copy(recorded_run, tmp_path, "run-c")
    lines = (moved / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    i = header.index("loss")
    row[i] = repr(float(row[i]) * 1.5)  # beyond every tier
    (moved / "metrics.csv").write_text(
        "\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")

    ok = run_cli(["compare", a, same, "--out", tmp_path / "o1", "--check"])
    assert ok.code == 0 and "FAILED" not in ok.out, ok
    assert "tier:" in ok.out  # the tier's name and reason are printed
    report = run_cli(["compare", a, moved, "--out", tmp_path / "o2"])
    assert report.code == 0, report
    assert "FAILED: 1 tolerance check(s) failed" in report.out
    assert "FAILS epoch-1 loss rel. diff" in report.out
    check = run_cli(["compare", a, moved, "--out", tmp_path / "o3",
                     "--check"])
    assert check.code == 1 and "FAILED" in check.out, check
    assert "FAILED" in (tmp_path / "o3" / "index.html").read_text()


def test_each_compare_gets_its_own_folder(recorded_run, tmp_path,
                                          monkeypatch):
    from kerasft.compare import report

    a = _copy(recorded_run, tmp_path / "runs", "run-a")
    b = _copy(recorded_run, tmp_path / "runs", "run-b")
    # two compares started within the same second
    monkeypatch.setattr(report.time, "strftime", lambda fmt: "20261126-0101")
    first = report.compare_runs([a, b])
    second = report.compare_runs([a, b])
    assert first.index.parent != second.index.parent
    assert first.index.is_file() and second.index.is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "compare-20261126-0101", "compare-20261126-0101-2", "run-a", "run-b"]


def test_compare_figures_keep_titles_whole_and_epochs_integer():
    """A long title on the narrowest compare figure stays inside it; a
    1-epoch panel gets one integer tick with half an epoch of margin."""
    from kerasft.compare import report

    names = [f"conv{i}_conv/kernel" for i in range(30)]
    fig = report._heatmaps(
        {"torch (01:02:03)": (names, [1], np.full((30, 1), 0.3))},
        "Relative difference of the weights, ||W_ref - W|| / ||W_ref||, "
        "per kernel and checkpoint, a title long enough to be cut off",
        "relative difference")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig._suptitle.get_window_extent(canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width

    fig = report.new_figure(4, 3)
    ax = fig.subplots()
    ax.plot([1], [0.5], "o")
    report._integer_epochs(ax, np.array([1.0]))
    assert ax.get_xlim() == (0.5, 1.5)
    assert list(ax.get_xticks()) == [1]


def test_summarize_reads_the_run_directory_and_leaves_missing_values_none(
        recorded_run, tmp_path):
    import json

    from kerasft.compare.summary import KEYS, summarize
    from kerasft.record.store import load_run

    s = summarize(load_run(recorded_run))
    assert tuple(s) == KEYS
    test = json.loads((recorded_run / "test_metrics.json").read_text())
    phases = json.loads((recorded_run / "phases.json").read_text())
    assert s["plan"] == "phased" and s["arch"] == "resnet50"
    assert s["state"] == "completed" and s["epochs"] == 2
    assert s["test_accuracy"] == test["test"]["accuracy"]
    assert (s["train_inference_accuracy"]
            == test["train_inference_mode"]["accuracy"])
    # the phased plan's widest phase (epoch 2, conv4-conv5 and the head)
    assert s["trainable_params"] == phases[1]["params"]["trainable"]
    assert s["trainable_params"] > phases[0]["params"]["trainable"]
    assert s["wall_seconds"] > 0 and s["images_per_second"] > 0
    assert s["best_val_epoch"] in (1, 2)
    assert 0 <= s["knn_accuracy"] <= 1 and s["knn_epoch"] == 2
    # a copy without test metrics, phases or embeddings: None, not a guess
    bare = _copy(recorded_run, tmp_path, "bare")
    s = summarize(load_run(bare))
    for key in ("test_accuracy", "train_inference_accuracy",
                "trainable_params", "knn_accuracy", "knn_epoch"):
        assert s[key] is None, key
    assert s["seed"] is not None and s["epochs"] == 2


# Views of `kerasft compare` by what they need (kerasft/compare/rules.py).
ANY_RUNS = ("curves", "metrics", "summary", "knn")
SAME_LAYERS = ("layer_change", "stage_change", "weight_stats", "embeddings")
SAME_START = ("hist_distance", "weight_diff", "probe", "divergences",
              "checks")


@pytest.fixture(scope="module")
def head_run(module_tmp):
    """A second real run: plan head, seed 7 (so another start), 1 step,
    only the recorders the compare views read."""
    from conftest import REPO, only_run_dir

    out = module_tmp / "head"
    old = os.getcwd()
    os.chdir(REPO)
    try:
        r = run_cli(["train", "-c", "quickstart", "--epochs", "1",
                     "--steps-per-epoch", "1", "--batch-size", "8",
                     "--max-train-images", "32", "--max-test-images", "8",
                     "--set", "data.validation_fraction=0.1",
                     "--plan", "head", "--seed", "7", "--no-report",
                     "--set", "record.embedding_size=12",
                     "--set", "record.probe_size=8",
                     *(f"--set=record.{k}=false" for k in (
                         "tensorboard", "feature_maps", "gradients",
                         "update_ratios", "batchnorm", "activations",
                         "probe_gradients")),
                     "--out", out])
    finally:
        os.chdir(old)
    assert r.code == 0, r
    return only_run_dir(out)


def _present(result):
    return {k for k, v in result.views.items() if v.present}


def test_runs_of_other_starts_and_plans_get_every_view_but_the_checks(
        recorded_run, head_run, tmp_path):
    """The phased recorded run against a head-only run of another seed:
    curves, metrics, per-layer views side by side; number-for-number views
    skipped, naming the fingerprints and the config keys that differ. The
    CLI says so, and --check does not pass a pair it could not check."""
    import json

    from kerasft.compare import compare_runs
    from kerasft.compare.rules import fingerprint
    from kerasft.errors import ConfigError
    from kerasft.record.store import load_run

    out = tmp_path / "cmp"
    r = run_cli(["compare", recorded_run, head_run, "--out", out, "--check"])
    assert r.code == 1, r
    fa = fingerprint(load_run(recorded_run))[:12]
    fb = fingerprint(load_run(head_run))[:12]
    assert fa != fb
    # default labels name what differs
    assert ("FAILED: --check: 1 pair(s) have no tolerance checks: "
            "phased seed=1337 vs head seed=7") in r.out
    assert ("skipped Weight-histogram distance, Weight difference per "
            "layer, Probe activations and probe gradients, Largest "
            "divergences, Tolerance checks: ") in r.out
    assert "head seed=7: they started from different weights" in r.out
    saved = json.loads((out / "comparison.json").read_text())
    views = saved["views"]
    assert {k for k, v in views.items() if v["present"]} == set(
        ANY_RUNS + SAME_LAYERS)
    for key in SAME_START:
        reason = views[key]["reason"]
        assert ("head seed=7: they started from different weights "
                f"(initial-weight fingerprints {fa} vs {fb})") in reason, key
        assert "plan.kind: phased vs head" in reason
        assert "seed: 1337 vs 7" in reason
    for key in ANY_RUNS + SAME_LAYERS:
        if key != "summary":
            assert views[key]["figure"] == f"compare_{key}.png"
            assert (out / f"compare_{key}.png").stat().st_size > 10_000, key
    assert not list(out.glob("compare_hist_distance.png"))
    assert [r["label"] for r in saved["runs"]] == ["phased seed=1337",
                                                   "head seed=7"]
    assert saved["runs"][1]["summary"]["plan"] == "head"
    assert list(saved["unchecked"]) == ["phased seed=1337 vs head seed=7"]
    assert f"fingerprints {fa} vs {fb}" in saved["unchecked"][
        "phased seed=1337 vs head seed=7"]
    # the head plan moved only the head; the phased one conv4-conv5 too
    change = saved["stage_change"]
    assert change["head seed=7"]["change"]["conv5"] == 0
    assert change["head seed=7"]["change"]["head"] > 0
    assert change["phased seed=1337"]["change"]["conv5"] > 0
    assert change["phased seed=1337"]["change"]["conv3"] == 0
    page = (out / "index.html").read_text()
    assert "Skipped views" in page and f"fingerprints {fa} vs {fb}" in page
    assert "<h2>Which layers moved, per run</h2>" in page
    assert "<h2>Tolerance checks</h2>" not in page
    table = json.loads((out / "divergences.json").read_text())
    assert table["checks"] == {} and table["divergences"] == []
    for bad in (["one"], ["x", "x"], ["x", ""]):
        with pytest.raises(ConfigError, match="distinct, non-empty labels"):
            compare_runs([recorded_run, head_run], tmp_path / "b",
                         labels=bad)


def _edited_copy(run, parent, name, **changes):
    """A copy of `run` (records and JSON files) whose config.yaml says
    something else: the input the comparability rules read."""
    import yaml

    dst = parent / name
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(
        "report", "tensorboard", "model.keras", "checkpoints",
        "initial.weights.h5", "test_predictions.npz"))
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section][field] = value
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def test_each_view_shows_the_runs_it_can_and_names_the_others(recorded_run,
                                                              tmp_path):
    """One compare of four run directories, each a copy of the recorded
    run that differs where a rule looks (the rules read config.yaml,
    env.json, layers.json and the store's bins.npz):

    - "full": the same start, another plan: per-layer views, no checks,
      for a config key (not the fingerprints);
    - "r101": another architecture (config and layers.json): curves and
      metrics only;
    - "format-1": the same start and config, format-1 histogram bins: the
      checks run, without the histogram ones, and no histogram view.
    """
    import json

    from kerasft.compare import compare_runs
    from kerasft.record.store import load_run

    full = _edited_copy(recorded_run, tmp_path, "full", plan__kind="full")
    r101 = _edited_copy(recorded_run, tmp_path, "r101",
                        model__arch="resnet101")
    layers = json.loads((r101 / "layers.json").read_text())
    extra = [dict(layers[-3], name=f"conv4_block{b}_{i}_conv")
             for b in range(7, 24) for i in (1, 2, 3)]
    (r101 / "layers.json").write_text(json.dumps(layers[:-3] + extra
                                                 + layers[-3:]))
    old = _edited_copy(recorded_run, tmp_path, "format-1")
    kind = load_run(old).records["weights"]
    np.savez(old / "record" / "weights" / "bins.npz",
             names=kind[0]["names"], edges=kind[0]["edges"])

    result = compare_runs([recorded_run, full, r101, old], tmp_path / "cmp",
                          labels=["ref", "full", "r101", "format-1"])
    assert _present(result) == set(ANY_RUNS + SAME_LAYERS) | {
        "checks", "divergences", "probe"}
    for key in SAME_LAYERS:
        reason = result.views[key].reason
        assert reason.startswith(
            "not shown for r101: different architectures (model.arch "
            f"resnet50 vs resnet101, {len(layers)} vs {len(layers) + 51} "
            "layers with weights)"), reason
    checks = result.views["checks"].reason
    assert "full: their configs differ where the numbers do: plan.kind: " \
           "phased vs full" in checks
    assert "model.arch: resnet50 vs resnet101" in checks
    assert "fingerprints" not in checks  # one start for all four
    hist = result.views["hist_distance"]
    assert not hist.present and "store format 1" in hist.reason
    assert list(result.checks) == ["ref vs format-1"]
    names = {c["name"] for c in result.checks["ref vs format-1"]}
    assert "epoch-1 loss rel. diff" in names
    assert "epoch-0 probe activation l2 rel. diff" in names
    assert not any("histogram" in n for n in names)
    assert not result.failed  # a copy: every remaining check is 0
    assert set(result.unchecked) == {"ref vs full", "ref vs r101"}
    assert [r["label"] for r in result.runs] == ["ref", "full", "r101",
                                                 "format-1"]
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "<h2>Loss and accuracy overlaid</h2>" in page
    assert "not shown for r101" in page
    assert "<td>format-1</td>" in page and "<td>r101</td>" in page
