"""The numbers behind the ``curves`` figure: diagnosis, step axis, phases."""

from __future__ import annotations

import numpy as np

from kerasft.render.curves import (
    diagnose_batchnorm_gap,
    diagnose_curves,
    phase_boundaries,
    step_positions,
)


def _curves(loss, val_loss, acc=None, val_acc=None) -> dict[str, np.ndarray]:
    out = {
        "epoch": np.arange(1, len(loss) + 1, dtype=float),
        "loss": np.asarray(loss, dtype=float),
        "val_loss": np.asarray(val_loss, dtype=float),
    }
    if acc is not None:
        out["accuracy"] = np.asarray(acc, dtype=float)
    if val_acc is not None:
        out["val_accuracy"] = np.asarray(val_acc, dtype=float)
    return out


def test_rising_validation_loss_is_over_fitting():
    notes = diagnose_curves(_curves(
        loss=[2.0, 1.4, 1.0, 0.7, 0.5, 0.35],
        val_loss=[2.0, 1.5, 1.3, 1.4, 1.6, 1.9],
        acc=[0.4, 0.6, 0.75, 0.85, 0.93, 0.97],
        val_acc=[0.4, 0.55, 0.62, 0.63, 0.62, 0.61],
    ))
    text = " ".join(notes)
    assert notes[0].startswith("over-fitting: validation loss rose for 3 "
                               "epochs while training loss fell")
    assert "(epochs 3-6" in notes[0]
    assert "large train/validation gap" in text
    assert "no sign of over-fitting" not in text
    assert "under-fitting" not in text


def test_one_epoch_rise_is_only_a_possible_start():
    notes = diagnose_curves(_curves(
        loss=[2.0, 1.5, 1.2, 1.0], val_loss=[2.0, 1.6, 1.40, 1.45],
    ))
    assert any(n.startswith("possible start of over-fitting") for n in notes)


def test_steady_converged_curves_show_no_over_fitting():
    notes = diagnose_curves(_curves(
        loss=[1.0, 0.5, 0.3, 0.25, 0.245],
        val_loss=[1.1, 0.6, 0.4, 0.35, 0.34],
        acc=[0.7, 0.85, 0.92, 0.95, 0.95],
        val_acc=[0.68, 0.83, 0.9, 0.92, 0.93],
    ))
    assert notes == ["no sign of over-fitting: validation loss is lowest in "
                     "the last epoch"]


def test_noise_below_tolerance_is_not_over_fitting():
    notes = diagnose_curves(_curves(
        loss=[1.0, 0.5, 0.3, 0.29, 0.288],
        val_loss=[1.1, 0.6, 0.4, 0.39, 0.392],
    ))
    assert "no sign of over-fitting" in notes


def test_under_fitting_still_falling_says_train_longer():
    notes = diagnose_curves(_curves(
        loss=[4.0, 3.0, 2.2, 1.6], val_loss=[3.9, 3.0, 2.3, 1.7],
        acc=[0.1, 0.2, 0.3, 0.4], val_acc=[0.1, 0.2, 0.3, 0.4],
    ))
    under = [n for n in notes if n.startswith("under-fitting")]
    assert len(under) == 1
    assert "40.0%" in under[0] and "falling steeply" in under[0]
    assert under[0].endswith("train longer")


def test_under_fitting_plateau_suggests_more_capacity():
    notes = diagnose_curves(_curves(
        loss=[2.0, 1.6, 1.59, 1.585], val_loss=[2.0, 1.7, 1.69, 1.68],
        acc=[0.2, 0.3, 0.31, 0.31], val_acc=[0.2, 0.3, 0.3, 0.3],
    ))
    assert any("levelled off" in n for n in notes)


def test_gap_from_loss_when_no_accuracy():
    notes = diagnose_curves(_curves(
        loss=[1.0, 0.5, 0.3, 0.2, 0.19], val_loss=[1.5, 1.2, 1.1, 1.0, 0.99],
    ))
    assert any(n.startswith("large train/validation gap: validation loss")
               for n in notes)


def test_one_epoch_and_missing_columns():
    assert diagnose_curves({}) == []
    assert diagnose_curves({"epoch": np.array([1.0])}) == []
    notes = diagnose_curves(_curves([1.0], [1.2]))
    assert notes[0].startswith("only one epoch")


def test_nan_loss_is_divergence():
    notes = diagnose_curves(_curves([2.0, 1.5, np.nan], [2.0, 1.6, np.nan]))
    assert notes == [notes[0]] and notes[0].startswith("diverged")
    assert "epoch 3" in notes[0]
    notes = diagnose_curves(_curves([np.nan, np.nan], [np.nan, np.nan]))
    assert notes[0].startswith("diverged: training loss is NaN/inf in every")
    # An empty cell mid-run is a gap, not divergence.
    notes = diagnose_curves(_curves([2.0, np.nan, 1.0], [2.0, 1.6, 1.2]))
    assert not any(n.startswith("diverged") for n in notes)


def test_missing_validation_cells_are_ignored():
    notes = diagnose_curves(_curves(
        loss=[1.0, 0.5, 0.3, 0.29], val_loss=[np.nan, 0.6, 0.4, 0.39],
    ))
    assert "no sign of over-fitting: validation loss is lowest in the last " \
        "epoch" in notes


def test_batchnorm_gap_note():
    test = {
        "last_epoch": {"accuracy": 0.9},
        "train_inference_mode": {"accuracy": 0.5},
        "test": {"accuracy": 0.45},
    }
    notes = diagnose_batchnorm_gap(test)
    assert len(notes) == 1 and "BatchNorm moving statistics" in notes[0]
    assert "40 points" in notes[0]
    test["train_inference_mode"]["accuracy"] = 0.8
    assert diagnose_batchnorm_gap(test) == []
    assert diagnose_batchnorm_gap({}) == []


def test_step_positions_end_each_epoch_on_its_integer():
    steps = np.arange(1, 13, dtype=float)
    epochs = np.repeat([1.0, 2.0, 3.0], 4)
    x = step_positions(steps, epochs)
    np.testing.assert_allclose(x, [0.25, 0.5, 0.75, 1.0] + [1.25, 1.5, 1.75,
                                   2.0] + [2.25, 2.5, 2.75, 3.0])


def test_step_positions_with_sparse_rows_and_partial_last_epoch():
    # Rows every 5 steps, 10 steps an epoch; epoch 3 stopped at step 25.
    steps = np.array([5, 10, 15, 20, 25], dtype=float)
    epochs = np.array([1, 1, 2, 2, 3], dtype=float)
    np.testing.assert_allclose(step_positions(steps, epochs),
                               [0.5, 1.0, 1.5, 2.0, 2.5])


def test_phase_boundaries_from_metrics_and_from_phases():
    metrics = {"epoch": np.array([1.0, 2.0, 3.0]),
               "phase": np.array(["head", "finetune", "finetune"])}
    assert phase_boundaries(metrics, []) == [(1.0, "head → finetune")]
    phases = [{"name": "head", "first_epoch": 1},
              {"name": "finetune", "first_epoch": 3}]
    assert phase_boundaries({"epoch": np.array([1.0, 2.0, 3.0])},
                            phases) == [(2.0, "head → finetune")]


def test_over_fitting_does_not_advise_more_epochs():
    notes = diagnose_curves(_curves(
        loss=[2.0, 1.4, 1.0, 0.7, 0.5, 0.35],
        val_loss=[2.0, 1.5, 1.3, 1.4, 1.6, 1.9],
        acc=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        val_acc=[0.1, 0.2, 0.3, 0.35, 0.4, 0.5],
    ))
    text = " ".join(notes)
    assert "over-fitting: validation loss rose" in text
    assert "train longer" not in text and "more epochs would" not in text
    assert "rather than more epochs" in text
