"""The ``curves``, ``structure``, ``confusion`` and ``top_losses`` figures,
rendered from a small synthetic run directory (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from kerasft.record.store import load_run
from kerasft.render import curves, predictions, structure
from kerasft.render.base import SECTIONS, RenderOptions
from kerasft.render.predictions import (
    confusion_matrix,
    display_names,
)
from kerasft.render.structure import stage_rows, stage_state

CLASSES = [f"a rather long class name number {i}" for i in range(12)]

LAYERS = [
    {"name": "conv1_conv", "class": "Conv2D", "stage": 1, "params": 900,
     "batchnorm": False},
    {"name": "conv1_bn", "class": "BatchNormalization", "stage": 1,
     "params": 40, "batchnorm": True},
    *[
        entry
        for s in (2, 3, 4, 5)
        for entry in (
            {"name": f"conv{s}_block1_1_conv", "class": "Conv2D", "stage": s,
             "params": 1000 * 10 ** (s - 2), "batchnorm": False},
            {"name": f"conv{s}_block1_1_bn", "class": "BatchNormalization",
             "stage": s, "params": 16 * s, "batchnorm": True},
        )
    ],
    {"name": "head", "class": "Dense", "stage": "head", "params": 500,
     "batchnorm": False},
]


def _phases(bn: str = "inference") -> list[dict]:
    return [
        {"name": "head", "first_epoch": 1, "epochs": 2, "stages": [],
         "lr_factor": 1.0, "batchnorm": bn,
         "params": {"trainable": 500, "frozen": 1111740}},
        {"name": "finetune", "first_epoch": 3, "epochs": 4, "stages": [4, 5],
         "lr_factor": 0.1, "batchnorm": bn,
         "params": {"trainable": 1100500, "frozen": 11740}},
    ]


def make_run(path: Path, epochs: int = 6, bn: str = "inference") -> Path:
    """Writes a run directory with every file the three modules read."""
    path.mkdir(parents=True, exist_ok=True)
    e = np.arange(1, epochs + 1)
    loss = 2.0 * 0.7 ** e
    # Validation loss bottoms out at epoch 3, then rises: over-fitting.
    val_loss = 2.0 * 0.75 ** np.minimum(e, 3) + 0.15 * np.maximum(e - 3, 0)
    acc = 1 - 0.8 * 0.6 ** e
    val_acc = 1 - 0.8 * 0.7 ** np.minimum(e, 3)
    phase = ["head" if x <= 2 else "finetune" for x in e]
    lines = ["epoch,phase,accuracy,loss,val_accuracy,val_loss,learning_rate"]
    lines += [f"{a},{b},{c},{d},{f},{g},0.001" for a, b, c, d, f, g in
              zip(e, phase, acc, loss, val_acc, val_loss)]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    rec = path / "record"
    rec.mkdir(exist_ok=True)
    rows = ["step,epoch,accuracy,loss,learning_rate,images_per_second"]
    for step in range(1, 4 * epochs + 1):
        ep = (step - 1) // 4 + 1
        rows.append(f"{step},{ep},{acc[ep - 1]},{loss[ep - 1] * 1.1},0.001,"
                    "50")
    (rec / "scalars.csv").write_text("\n".join(rows) + "\n")
    (path / "phases.json").write_text(json.dumps(_phases(bn)))
    (path / "layers.json").write_text(json.dumps(LAYERS))
    (path / "data.json").write_text(json.dumps({"class_names": CLASSES}))
    (path / "test_metrics.json").write_text(json.dumps({
        "test": {"accuracy": 0.45, "loss": 1.9},
        "train_inference_mode": {"accuracy": 0.5, "loss": 1.5},
        "last_epoch": {"accuracy": 0.9, "loss": 0.3},
        "train_inference_mode_images": 1000,
    }))
    rng = np.random.default_rng(0)
    n, k = 60, len(CLASSES)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per_image = -np.log(probs[np.arange(n), labels])
    top = np.argsort(-per_image)[:8]
    np.savez(
        path / "test_predictions.npz", labels=labels,
        probs=probs.astype(np.float32), loss=per_image.astype(np.float32),
        top_loss_indices=top,
        top_loss_images=rng.integers(0, 255, (8, 16, 16, 1), dtype=np.uint8),
    )
    return path


def _render_all(run):
    out = []
    for module in (curves, structure, predictions):
        out += module.render(run, RenderOptions())
    return out


def test_figures_from_a_synthetic_run(tmp_path):
    run = load_run(make_run(tmp_path / "run"))
    results = _render_all(run)
    assert [r.key for r in results] == [
        "curves", "structure", "confusion", "top_losses"]
    sections = {s for s, _ in SECTIONS}
    for r in results:
        assert isinstance(r.figure, Figure)
        assert r.section in sections and r.title and r.caption
    by_key = {r.key: r for r in results}
    assert by_key["curves"].section == "curves"
    assert by_key["structure"].section == "structure"
    assert by_key["top_losses"].section == "predictions"
    # The curve findings (kerasft.render.diagnose) are printed on the figure.
    suptitle = by_key["curves"].figure.get_suptitle()
    assert "over-fitting" in suptitle
    assert "BatchNorm train/inference gap" in suptitle
    title = by_key["structure"].figure.get_suptitle()
    assert "finetune: 1.1M trainable / 11.7k frozen" in title
    confusion_ax = by_key["confusion"].figure.axes[0]
    assert "accuracy" in confusion_ax.get_title()
    # Long class names are shortened on the axes.
    ticks = [t.get_text() for t in confusion_ax.get_xticklabels()]
    assert all(len(t) <= 14 for t in ticks) and len(set(ticks)) == 12
    assert ticks[3] == "a rath…umber 3"
    for r in results:
        r.figure.savefig(tmp_path / f"{r.key}.png", dpi=50)
        assert (tmp_path / f"{r.key}.png").stat().st_size > 0


def test_one_epoch_run(tmp_path):
    run = load_run(make_run(tmp_path / "run", epochs=1))
    result = curves.render(run, RenderOptions())
    assert [r.key for r in result] == ["curves"]
    assert "not enough points (n=1, need 3)" in \
        result[0].figure.get_suptitle()


@pytest.mark.parametrize("missing", [
    "metrics.csv", "layers.json", "phases.json", "test_predictions.npz",
])
def test_missing_files_give_no_figure(tmp_path, missing):
    path = make_run(tmp_path / "run")
    (path / missing).unlink()
    keys = [r.key for r in _render_all(load_run(path))]
    expected = {
        "metrics.csv": ["structure", "confusion", "top_losses"],
        "layers.json": ["curves", "confusion", "top_losses"],
        "phases.json": ["curves", "confusion", "top_losses"],
        "test_predictions.npz": ["curves", "structure"],
    }[missing]
    assert keys == expected


def test_empty_run_dir_gives_no_figures(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _render_all(load_run(tmp_path / "empty")) == []


def test_optional_parts_missing(tmp_path):
    path = make_run(tmp_path / "run")
    (path / "test_metrics.json").unlink()
    (path / "data.json").unlink()
    (path / "record" / "scalars.csv").unlink()
    # Predictions without the top-loss images: the confusion matrix only.
    with np.load(path / "test_predictions.npz") as f:
        arrays = {k: f[k] for k in ("labels", "probs")}
    np.savez(path / "test_predictions.npz", **arrays)
    keys = [r.key for r in _render_all(load_run(path))]
    assert keys == ["curves", "structure", "confusion"]


def _with_config(path: Path) -> Path:
    from kerasft.config import RunConfig, save_config

    save_config(RunConfig(), path / "config.yaml")
    return path


def test_damaged_files_become_visible_notes_in_the_report(tmp_path):
    """A renderer that cannot read its file says so on the page."""
    from kerasft.render import render_report

    path = _with_config(make_run(tmp_path / "run"))
    (path / "layers.json").write_text("{not json")
    (path / "test_predictions.npz").write_bytes(b"PK\x03\x04 cut short")
    report = render_report(path)
    notes = [w for w in report.warnings if "failed" in w]
    assert len(notes) == 2, report.warnings
    assert "'structure'" in notes[0] and "layers.json" in notes[0]
    assert "'predictions'" in notes[1] and "test_predictions.npz" in notes[1]
    page = report.index.read_text()
    assert "layers.json cannot be read" in page
    assert "test_predictions.npz cannot be read" in page
    assert not (report.index.parent / "structure.png").exists()


def test_class_names_with_dollar_signs_render_as_text(tmp_path):
    """Mathtext is off: a class called $\\cmd$ must not crash a figure."""
    from kerasft.render import render_report

    path = _with_config(make_run(tmp_path / "run"))
    names = [r"$\cmd$", "$x^2$ and $", *CLASSES[2:]]
    (path / "data.json").write_text(json.dumps({"class_names": names}))
    report = render_report(path)
    assert not [w for w in report.warnings if "failed" in w], report.warnings
    assert (report.index.parent / "confusion.png").exists()
    ticks = [t.get_text() for t in
             predictions.render(load_run(path))[0].figure.axes[0]
             .get_xticklabels()]
    assert r"$\cmd$" in ticks


def test_stage_split_matches_phase_totals():
    rows = stage_rows(LAYERS)
    assert [r.label for r in rows] == [
        "1 stem (conv1)", "2 conv2", "3 conv3", "4 conv4", "5 conv5",
        "head (classifier)"]
    for phase in _phases("train"):
        states = [stage_state(r, phase) for r in rows]
        assert sum(s[1] + s[2] for s in states) == sum(r.params for r in rows)
    head, finetune = _phases("inference")
    # BN inference: frozen stages and BN layers of trainable stages.
    conv5 = rows[4]
    cat, trainable, frozen, text = stage_state(conv5, finetune)
    assert (trainable, frozen) == (conv5.params - conv5.bn_params,
                                   conv5.bn_params)
    assert text == "trainable\nBN inference"
    assert stage_state(conv5, head)[3] == "frozen\nBN inference"
    finetune["batchnorm"] = "train"
    cat, trainable, frozen, text = stage_state(conv5, finetune)
    assert frozen == conv5.bn_params // 2 and text == "trainable\nBN training"
    assert stage_state(rows[-1], head)[1] == rows[-1].params


def test_confusion_matrix():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 1, 1, 1, 1])
    cm = confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 3, 0]])


def test_display_names_stay_distinct():
    assert display_names(["cat", "dog"]) == ["cat", "dog"]
    assert display_names(["golden_retriever_dog", "cat"], 10) == [
        "golden_re…", "cat"]
    names = ["n0 same prefix x", "n1 same prefix x"]
    assert display_names(["same long prefix a", "same long prefix b"], 10) \
        == ["same…fix a", "same…fix b"]
    short = display_names(names, 8)
    assert len(set(short)) == 2 and all(len(s) <= 8 for s in short)
