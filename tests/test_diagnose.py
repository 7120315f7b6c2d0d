"""Diagnosis: each planted pathology fires exactly its finding, a healthy
run none.

Every rule is tested on small synthetic run stores written with the
store's own writers (exact, milliseconds). The pathologies are also
planted in real tiny ResNet50 runs on the backend under test, two per
run: LR x1000 with a frozen stage whose BatchNorm keeps training; LR
x1e-6 with a frozen kernel edited by hand; a dead block with vanishing
gradients; exploding gradients with a stage that never moves; and the
shared healthy run raises none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SLOW_OFF_TORCH, TINY, only_run_dir, run_cli
from kerasft.record import store
from kerasft.record.store import load_run
from kerasft.render.diagnose import (
    RULES,
    confusion_findings,
    diagnose,
    problems,
    summary_lines,
)

KERNELS = ["conv1_conv", "conv2_block1_1_conv", "conv3_block1_1_conv",
           "conv4_block1_1_conv", "conv5_block1_1_conv",
           "conv5_block2_1_conv", "head"]
BNS = ["conv1_bn", "conv3_block1_1_bn", "conv5_block1_1_bn"]
STAGE = {"conv1": 1, "conv2": 2, "conv3": 3, "conv4": 4, "conv5": 5}
BLOCKS = ["conv1_relu", "conv3_block1_out", "conv5_block2_out"]
STEPS = 10  # per epoch


def _stage(name: str):
    return "head" if name == "head" else STAGE[name.split("_")[0]]


def write_run(path: Path, epochs: int = 5, *, plan: str = "full",
              ratio: float = 1e-3, loss=None, val_loss=None, acc=None,
              val_acc=None, grad_depth=None, frozen_moves=(),
              still=(), zeroed=None, bn_moves=None, every: int = 1,
              status: dict | None = None) -> Path:
    """A healthy run store, with one pathology planted by the arguments.

    `plan`: ``full`` (every stage trains) or ``head`` (backbone frozen,
    BatchNorm meant frozen). `ratio`: update ratio of the training
    kernels. `grad_depth`: gradient norm of the input-side kernels (the
    output side is 1). `frozen_moves`: frozen kernels that change anyway.
    `still`: training kernels that never change. `zeroed`: a kernel whose
    weights and gradients are 0 and whose block's channels die.
    `bn_moves`: BN layers whose moving statistics change (default: those
    meant to train). `every`: the step tables' interval.
    """
    path.mkdir(parents=True)
    e = np.arange(1, epochs + 1, dtype=float)
    loss = 2.0 * 0.5 ** e + 0.05 if loss is None else np.asarray(loss, float)
    val_loss = loss * 1.1 if val_loss is None else np.asarray(val_loss, float)
    acc = 1 - 0.9 * 0.4 ** e if acc is None else np.asarray(acc, float)
    val_acc = acc - 0.02 if val_acc is None else np.asarray(val_acc, float)
    stages = [1, 2, 3, 4, 5] if plan == "full" else []
    layers = [{"name": n, "class": "Conv2D", "stage": _stage(n),
               "params": 100, "batchnorm": False} for n in KERNELS]
    layers += [{"name": n, "class": "BatchNormalization", "stage": _stage(n),
                "params": 8, "batchnorm": True} for n in BNS]
    phases = [{"name": plan, "first_epoch": 1, "epochs": epochs,
               "stages": stages, "lr_factor": 1.0, "batchnorm": "train"}]
    for name, data in (("layers.json", layers), ("phases.json", phases),
                       ("data.json", {"class_names": list("abcd"), "sizes":
                                      {"train": 4000, "validation": 400,
                                       "test": 400}}),
                       ("status.json", status or {"state": "completed"}),
                       ("test_metrics.json", {
                           "test": {"accuracy": float(val_acc[-1]),
                                    "loss": float(val_loss[-1])},
                           "test_images": 400,
                           "train_inference_mode": {
                               "accuracy": float(acc[-1]),
                               "loss": float(loss[-1])},
                           "train_inference_mode_images": 1000,
                           "last_epoch": {"accuracy": float(acc[-1]),
                                          "loss": float(loss[-1])}})):
        (path / name).write_text(json.dumps(data))
    t = store.TableWriter(path / "metrics.csv", ["epoch", "phase", "loss",
                          "accuracy", "val_loss", "val_accuracy"])
    for i in range(epochs):
        t.write({"epoch": i + 1, "phase": plan, "loss": loss[i],
                 "accuracy": acc[i], "val_loss": val_loss[i],
                 "val_accuracy": val_acc[i]})
    t.close()
    rec = path / "record"
    trains = {k: plan == "full" or k == "head" for k in KERNELS}
    variables = [f"{k}/kernel" for k in KERNELS]
    scalars = store.TableWriter(rec / "scalars.csv", ["step", "epoch", "loss"])
    ratios = store.TableWriter(rec / "update_ratios.csv",
                               ["step", "epoch", *variables])
    norms = store.TableWriter(rec / "grad_norms.csv",
                              ["step", "epoch", *variables])
    depth = grad_depth if grad_depth is not None else 1.0
    for s in range(1, epochs * STEPS + 1):
        ep = (s - 1) // STEPS + 1
        # the running mean within the epoch ends at the epoch's loss
        scalars.write({"step": s, "epoch": ep, "loss": loss[ep - 1]})
        if s % every:
            continue
        ratios.write({"step": s, "epoch": ep, **{
            v: (ratio if trains[k] and k not in still and k != zeroed
                else 0.0) for k, v in zip(KERNELS, variables)}})
        norms.write({"step": s, "epoch": ep, **{
            v: (None if not trains[k] else 0.0 if k == zeroed else
                depth if i < 2 else 1.0)
            for i, (k, v) in enumerate(zip(KERNELS, variables))}})
    for t in (scalars, ratios, norms):
        t.close()
    rng = np.random.default_rng(0)
    w0 = {k: rng.normal(size=64) * 0.05 for k in KERNELS}
    for ep in range(epochs + 1):
        names, rel, arrays = [], [], []
        for k in KERNELS:
            moves = (trains[k] and k not in still and k != zeroed) \
                or k in frozen_moves
            w = w0[k] * (1 + 0.01 * ep) if moves else w0[k]
            if k == zeroed:
                w = np.zeros_like(w)
            arrays.append(w)
            names.append(f"{k}/kernel")
            rel.append(np.linalg.norm(w - w0[k]) / np.linalg.norm(w0[k]))
        hist = {"names": np.array(names), "rel_change": np.array(rel)}
        hist.update(_histograms(arrays))
        store.write_npz(rec / "weights" / store.record_name(ep), **hist)
        if ep:
            grads = [np.full(64, 0.0 if k == zeroed else 1e-2)
                     for k in KERNELS if trains[k]]
            g = _histograms(grads)
            g["names"] = np.array([f"{k}/kernel" for k in KERNELS
                                   if trains[k]])
            g["step"] = np.array(ep * STEPS)
            store.write_npz(rec / "gradients" / store.record_name(ep), **g)
        moving = bn_moves if bn_moves is not None else (
            BNS if plan == "full" else [])
        drift = np.array([0.01 * ep if n in moving else 0.0 for n in BNS])
        store.write_npz(
            rec / "batchnorm" / store.record_name(ep), names=np.array(BNS),
            mean_drift=drift, var_drift=drift,
            moving_mean_avg=1 + drift, moving_var_avg=1 + drift)
        acts = [np.maximum(rng.normal(size=256), 0) for _ in BLOCKS]
        dead = np.zeros(len(BLOCKS))
        if zeroed and ep == epochs:
            acts[-1] = np.zeros(256)
            dead[-1] = 1.0
        a = _histograms(acts)
        store.write_npz(rec / "activations" / store.record_name(ep),
                        names=np.array(BLOCKS), dead_fraction=dead, **a)
    n = 400
    labels = np.arange(n) % 4
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), labels] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    store.write_npz(path / "test_predictions.npz", labels=labels,
                    probs=probs.astype(np.float32),
                    loss=-np.log(probs[np.arange(n), labels]))
    return path


def _histograms(arrays) -> dict:
    edges = np.stack([store.dyadic_edges(a) for a in arrays])
    return {"edges": edges,
            "counts": np.stack([store.histogram(a, e)
                                for a, e in zip(arrays, edges)]),
            "stats": np.stack([store.summary_stats(a) for a in arrays]),
            "nonfinite": np.array([int(np.sum(~np.isfinite(a)))
                                   for a in arrays])}


def ids(findings, severity=None) -> list[str]:
    return [f.id for f in findings
            if severity is None or f.severity == severity]


def problem_ids(path: Path) -> list[str]:
    return ids(problems(diagnose(load_run(path))))


# ------------------------------------------------------------- synthetic


def test_healthy_run_raises_nothing(tmp_path):
    findings = diagnose(load_run(write_run(tmp_path / "r")))
    assert problems(findings) == [], [f.text() for f in findings]
    assert summary_lines(findings)[0].startswith("diagnosis: healthy")


@pytest.mark.parametrize("plant, expected", [
    (dict(ratio=0.5), "lr_too_high"),
    (dict(loss=[2.0, 1.5, 6.0, 1.4, 1.3]), "lr_too_high"),
    (dict(ratio=1e-6, loss=[1.4, 1.39, 1.39, 1.38, 1.38],
          acc=[0.3] * 5), "lr_too_low"),
    (dict(loss=[2.0, 1.0, 0.5, 0.25, 0.12],
          val_loss=[2.0, 1.1, 0.9, 1.1, 1.4],
          acc=[0.4, 0.6, 0.7, 0.8, 0.85],
          val_acc=[0.4, 0.55, 0.6, 0.6, 0.6]), "overfitting"),
    # a head too small to fit: accuracy levels off low
    (dict(loss=[2.0, 1.6, 1.55, 1.54, 1.54], acc=[0.3, 0.4, 0.42, 0.42, 0.42],
          val_acc=[0.3, 0.4, 0.41, 0.41, 0.41]), "underfitting"),
    (dict(grad_depth=1e-5), "vanishing_gradients"),
    (dict(grad_depth=1e5), "exploding_gradients"),
    (dict(zeroed="conv5_block2_1_conv"), "dead_layer"),
    (dict(still=("conv4_block1_1_conv",)), "never_moved"),
    (dict(plan="head", frozen_moves=("conv3_block1_1_conv",)),
     "frozen_moved"),
    (dict(plan="head", bn_moves=("conv3_block1_1_bn",)), "bn_frozen_moving"),
])
def test_planted_pathology_fires_exactly_its_finding(tmp_path, plant,
                                                     expected):
    findings = diagnose(load_run(write_run(tmp_path / "r", **plant)))
    assert ids(problems(findings)) == [expected], [f.text() for f in
                                                   findings]
    (f,) = problems(findings)
    assert f.evidence and f.action and f.message
    assert all(e.text() for e in f.evidence)


def test_diverged_run_is_lr_too_high_not_under_fitting(tmp_path):
    # The loss exploded, accuracy stuck at chance (the old diagnosis said
    # "under-fitting, raise the learning rate").
    path = write_run(tmp_path / "r", ratio=0.5, acc=[0.25] * 5,
                     loss=[1.4, 30.0, 900.0, 2e4, 3e5])
    findings = diagnose(load_run(path))
    assert ids(problems(findings)) == ["diverged"]
    assert "learning rate is too high" in findings[0].message
    assert not any("raise" in f.text() for f in findings)


def test_guard_fault_is_diverged_with_its_layer(tmp_path):
    fault = {"epoch": 3, "batch": 1, "step": 22, "learning_rate": 3.0,
             "layer": "conv2_block1_1_conv", "values": {"loss": "nan"}}
    path = write_run(tmp_path / "r", epochs=2,
                     status={"state": "failed", "fault": fault})
    findings = diagnose(load_run(path))
    (f,) = problems(findings)
    assert f.id == "diverged" and f.severity == "error"
    assert "layer conv2_block1_1_conv, epoch 3, step 22" in \
        f.evidence[0].text()
    # "no fit judgement holds": not even a note that two epochs are too
    # few to judge the fit.
    text = " ".join(g.text() + " ".join(e.text() for e in g.evidence)
                    for g in findings)
    assert "fitting" not in text, text


def test_over_and_under_fitting_never_both(tmp_path):
    # Low training accuracy AND rising validation loss: over-fitting only.
    path = write_run(tmp_path / "r", loss=[2.0, 1.6, 1.3, 1.1, 0.9],
                     val_loss=[2.0, 1.7, 1.8, 1.9, 2.1],
                     acc=[0.3, 0.4, 0.5, 0.55, 0.6])
    assert problem_ids(path) == ["overfitting"]


def test_fit_is_judged_on_the_final_phase(tmp_path):
    # Two epochs of the final phase: too few to judge, and it says so.
    path = write_run(tmp_path / "r", epochs=2, acc=[0.2, 0.3],
                     loss=[2.0, 1.9])
    findings = diagnose(load_run(path))
    assert problems(findings) == []
    (few,) = [f for f in findings if f.id == "too_few_points"]
    assert "not enough points (n=2, need 3)" in " ".join(
        e.text() for e in few.evidence)
    # epochs are missing, not step rows: no advice to record more often
    assert "every_steps" not in few.action


def test_too_few_step_rows_say_so(tmp_path):
    path = write_run(tmp_path / "r", epochs=1, every=STEPS * 2)
    findings = diagnose(load_run(path))
    (few,) = [f for f in findings if f.id == "too_few_points"]
    text = " ".join(e.text() for e in few.evidence)
    assert "update-ratio trend" in text and "not enough points (n=0" in text
    assert "record more often (record.every_steps)" in few.action
    from kerasft.render import gradients
    from kerasft.render.base import RenderOptions

    result = gradients.update_ratios(load_run(path), RenderOptions())
    assert "not enough points (n=0" in result.figure.axes[0].get_title()


def test_confusion_findings():
    cm = np.array([[1, 1, 0], [0, 2, 0], [0, 3, 0]])
    found = confusion_findings(cm, ["cat", "dog", "fox"])
    assert ids(found) == ["predictions_collapse", "classes_never_recognised",
                          "top_confusion"]
    assert found[0].message.startswith("predictions collapse onto class "
                                       "'dog'")
    assert "'fox'" in found[1].message


def test_every_finding_id_is_documented():
    doc = (REPO / "docs" / "diagnosis.md").read_text()
    for rule in RULES:
        assert f"`{rule}`" in doc, rule


def test_report_page_shows_findings_first(tmp_path, monkeypatch):
    from kerasft.config import RunConfig, save_config
    from kerasft.render import render_report, report as report_module

    # Two figure modules are enough to see the order (all of them take
    # seconds; the shared real run's page has every figure).
    monkeypatch.setattr(report_module, "FIGURE_MODULES",
                        ("curves", "gradients"))
    path = write_run(tmp_path / "r", ratio=0.5)
    save_config(RunConfig(), path / "config.yaml")
    report = render_report(path)
    page = report.index.read_text()
    assert ids(problems(report.findings)) == ["lr_too_high"]
    first = page.index("data-finding='lr_too_high'")
    assert first < page.index("test accuracy") < page.index("<figure")
    assert "What to do:" in page and "&gt; 1e-01" in page


# ------------------------------------------------------------- real runs


def test_healthy_real_run(recorded_run):
    findings = diagnose(load_run(recorded_run))
    assert problems(findings) == [], [f.text() for f in findings]
    page = (recorded_run / "report" / "index.html").read_text()
    assert "id='healthy'" in page


def _leave_bn_training(monkeypatch, prefix: str = "conv2_") -> None:
    """Plants "BatchNorm left training in a frozen stage": after the plan
    freezes the backbone, the BatchNorm layers of one stage are made
    trainable again (as a custom model or callback might)."""
    import keras

    from kerasft.train import runner

    real = runner.apply_phase

    def apply_phase(model, phase, batchnorm):
        counts = real(model, phase, batchnorm)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization) and \
                    layer.name.startswith(prefix):
                layer.trainable = True
        return counts

    monkeypatch.setattr(runner, "apply_phase", apply_phase)


def _train_in_process(tmp_path, args, keep=()):
    """A tiny real run that records only the kinds in `keep` (what the
    rules under test read: every other recorder is switched off)."""
    import os

    kinds = ("scalars", "weights", "gradients", "update_ratios",
             "activations", "embeddings", "probe_gradients", "batchnorm",
             "feature_maps", "tensorboard")
    off = [a for k in kinds if k not in keep
           for a in ("--set", f"record.{k}=false")]
    old = os.getcwd()
    os.chdir(REPO)
    try:
        # TINY, with the fewest forward passes (they are the cost): the 2
        # steps' 16 images are the whole training set, so inference-mode
        # evaluation is 2 batches; validation and test 1 batch each.
        r = run_cli(["train", "-c", "quickstart", "--epochs", "1", *TINY,
                     "--max-train-images", "16", "--max-test-images", "8",
                     *off, "--no-report", "--out", tmp_path, *args])
    finally:
        os.chdir(old)
    return r, only_run_dir(tmp_path)


def test_lr_x1000_and_frozen_batchnorm_training(tmp_path, monkeypatch):
    """Two independent pathologies planted in one tiny run (one run keeps
    CI fast): a head-only plan at 1000x quickstart's rate, and the conv2
    BatchNorm layers left training although their stage is frozen.
    Exactly their two findings fire; neither silences the other, and no
    fit advice ("raise the learning rate") appears."""
    _leave_bn_training(monkeypatch)
    r, run = _train_in_process(
        tmp_path, ["--plan", "head", "--lr", "1.0",
                   "--set", "optimizer.schedule=constant"],
        keep=("scalars", "update_ratios", "batchnorm"))
    assert r.code == 0, r
    findings = diagnose(load_run(run))
    print(r.out)
    got = ids(problems(findings))
    # The head's update ratios are ~1000x the band (lr_too_high); should
    # the loss also explode, `diverged` says "rate too high" instead.
    assert got in (["lr_too_high", "bn_frozen_moving"],
                   ["diverged", "bn_frozen_moving"]), \
        [f.text() for f in findings]
    (bn,) = [f for f in findings if f.id == "bn_frozen_moving"]
    assert "conv2_" in bn.message
    assert {str(e.layer).split("_")[0] for e in bn.evidence} == {"conv2"}
    assert f"[{got[0]}]" in r.out and "[bn_frozen_moving]" in r.out
    assert "underfitting" not in ids(findings)
    assert "raise the learning rate" not in r.out
    assert "raise optimizer.learning_rate" not in r.out


@pytest.mark.slow
def test_lr_x1000_full_plan_is_diverged_not_under_fitting(tmp_path):
    # quickstart's rate is 1e-3: x1000 on every stage. The run may stop at
    # a NaN (the guard) or end with an exploded loss; either way: diverged.
    r, run = _train_in_process(
        tmp_path, ["--lr", "1.0", "--set", "optimizer.schedule=constant"],
        keep=("scalars", "update_ratios"))
    findings = diagnose(load_run(run))
    print("\n".join(summary_lines(findings)))
    assert ids(problems(findings)) in (["diverged"], ["lr_too_high"]), \
        [f.text() for f in findings]
    assert "underfitting" not in ids(findings)
    if r.code == 0:
        assert "[diverged]" in r.out or "[lr_too_high]" in r.out


@pytest.mark.slow
def test_frozen_stage_with_batchnorm_training(tmp_path, monkeypatch):
    """The BatchNorm plant alone, at quickstart's own rate: exactly
    ``bn_frozen_moving``."""
    _leave_bn_training(monkeypatch)
    r, run = _train_in_process(tmp_path, ["--plan", "head"],
                               keep=("batchnorm",))
    assert r.code == 0, r
    findings = diagnose(load_run(run))
    print(r.out)
    assert ids(problems(findings)) == ["bn_frozen_moving"], \
        [f.text() for f in findings]
    assert "conv2_" in findings[0].message
    assert "[bn_frozen_moving]" in r.out


# ------------------------------------------- more plants in real tiny runs
#
# Each run is phased (epoch 1 head only, epoch 2 fine-tune) and the plant
# goes in when the fine-tune phase starts, after the head phase's records:
# what a rule compares across the phase is then the plant's doing. Two
# independent plants share a run (CI time); each test asserts that exactly
# its two findings fire.

PHASED = ["--epochs", "2", "--plan", "phased", "--set", "plan.head_epochs=1"]


def _plant_at_finetune(monkeypatch, plant) -> None:
    """Calls `plant(model)` as the fine-tune phase begins (after the plan
    set `trainable`), as a user's callback or custom code might."""
    from kerasft.train import runner

    real = runner.apply_phase

    def apply_phase(model, phase, batchnorm):
        counts = real(model, phase, batchnorm)
        if phase.name == "finetune":
            plant(model)
        return counts

    monkeypatch.setattr(runner, "apply_phase", apply_phase)


def _bn_layers(model, prefixes, branch_only=False):
    import keras

    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            and layer.name.startswith(prefixes)
            and not (branch_only and layer.name.endswith("_0_bn"))]


def _scale_gamma(model, prefixes, factor, branch_only=False):
    """Multiplies the BatchNorm gammas of the layers named `prefixes...`:
    the gradient reaching the kernel before each is scaled by `factor`,
    while the skip connections carry the rest of the network's as before."""
    for layer in _bn_layers(model, prefixes, branch_only):
        layer.gamma.assign(layer.gamma.value * factor)


def _finding(findings, id_):
    (f,) = [f for f in findings if f.id == id_]
    return f


def _exactly(r, run, expected):
    """Asserts the run ended and that exactly the `expected` problem ids
    fire, each printed by `train`; returns the findings."""
    assert r.code == 0, r
    findings = diagnose(load_run(run))
    print(r.out)
    assert sorted(ids(problems(findings))) == sorted(expected), \
        [f.text() for f in findings]
    for id_ in expected:
        assert f"[{id_}]" in r.out, id_
    return findings


def test_lr_x1e6_and_a_frozen_layer_edited(tmp_path, monkeypatch):
    """quickstart's rate x1e-6 (1e-9), and a frozen conv3 kernel changed
    by hand during the fine-tune phase (which unfreezes conv5 only):
    exactly ``lr_too_low`` and ``frozen_moved``, naming that kernel."""
    def nudge(model):
        kernel = model.get_layer("conv3_block1_1_conv").kernel
        kernel.assign(kernel.value + 0.01)

    _plant_at_finetune(monkeypatch, nudge)
    r, run = _train_in_process(
        tmp_path, [*PHASED, "--set", "plan.unfreeze=1", "--lr", "1e-9",
                   "--set", "optimizer.schedule=constant"],
        keep=("scalars", "weights", "update_ratios"))
    findings = _exactly(r, run, ["frozen_moved", "lr_too_low"])
    moved = _finding(findings, "frozen_moved")
    assert "conv3_block1_1_conv" in moved.message
    assert {str(e.layer).split("/")[0] for e in moved.evidence} == {
        "conv3_block1_1_conv"}


@SLOW_OFF_TORCH
def test_dead_block_and_vanishing_gradients(tmp_path, monkeypatch):
    """60% of conv4_block6's output channels killed (their BatchNorm beta
    set to -1e4: the ReLU after the sum is 0 on every image), and the
    gradients of the residual branches of conv4's first three blocks
    shrunk 1e4x (their BatchNorm gammas; the projection shortcut keeps
    its own, or the next BatchNorm would divide the shrink away): exactly
    ``dead_layer`` on conv4_block6 and ``vanishing_gradients``."""
    def plant(model):
        import keras

        bn = model.get_layer("conv4_block6_3_bn")
        beta = np.array(keras.ops.convert_to_numpy(bn.beta.value))
        beta[: int(0.6 * beta.size)] = -1e4
        bn.beta.assign(beta)
        _scale_gamma(model, ("conv4_block1_", "conv4_block2_",
                             "conv4_block3_"), 1e-4, branch_only=True)

    _plant_at_finetune(monkeypatch, plant)
    r, run = _train_in_process(
        tmp_path, PHASED,
        keep=("scalars", "weights", "gradients", "activations"))
    findings = _exactly(r, run, ["dead_layer", "vanishing_gradients"])
    assert "conv4_block6" in _finding(findings, "dead_layer").message


@SLOW_OFF_TORCH
def test_exploding_gradients_and_a_stage_that_never_moved(tmp_path,
                                                         monkeypatch):
    """conv5 at a learning-rate multiplier of 1e-30 (so it never moves),
    and the gradients of conv5's residual branches shrunk 1e4x against
    the input side's (their BatchNorm gammas): exactly
    ``exploding_gradients`` and ``never_moved`` on conv5."""
    _plant_at_finetune(monkeypatch, lambda model: _scale_gamma(
        model, ("conv5_",), 1e-4, branch_only=True))
    r, run = _train_in_process(
        tmp_path, [*PHASED,
                   "--set", "plan.lr_multipliers={conv5: 1.0e-30, conv4: 1}"],
        keep=("scalars", "weights", "gradients", "update_ratios"))
    findings = _exactly(r, run, ["exploding_gradients", "never_moved"])
    still = _finding(findings, "never_moved")
    assert {str(e.layer).split("_")[0] for e in still.evidence} == {"conv5"}
