"""The numbers behind the ``curves`` figure: step axis, phases (the fit
diagnosis is tested in test_diagnose.py)."""

from __future__ import annotations

import numpy as np

from kerasft.render.curves import phase_boundaries, step_positions


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
