"""Gradients of the real training steps: norms every N steps, histograms."""

from __future__ import annotations

import numpy as np

from kerasft.backend.gradient_tap import GradientTap
from kerasft.record import store
from kerasft.record.recorder import Recorder, tracked_variables


class GradientRecorder(Recorder):
    """Records the gradients the optimizer applies, on any backend.

    Every `every_steps` training steps it appends each variable's gradient
    L2 norm to ``grad_norms.csv``; at each epoch end it writes
    ``gradients/epoch-NNNN.npz``: histograms (each record's bins from its
    own values, `store.bin_grid`) and stats of a fixed sample of at most
    `store.GRADIENT_SAMPLE` entries per variable, from the epoch's last
    step (``l2`` is the full gradient's norm; ``step`` the global step the
    sample comes from). The epoch's last step is recorded whether or not it
    falls on `every_steps`; when Keras does not know the epoch's length
    (a dataset without one) or the epoch stops early, the sample is the
    last recorded step's. Norms and samples are taken on the device by a
    `GradientTap` on the optimizer, on recorded steps only (other steps
    cost nothing); frozen variables read as empty cells. There is no epoch
    0 (no step has run). By default the tap is detached at `on_train_end`,
    so the optimizer is left as it was (and saves without the tap's
    variables).

    Args:
        directory: the store directory (``<run>/record``).
        every_steps: norm rows every this many steps. Defaults to `50`.
        every_epochs: histograms every this many epochs. Defaults to `1`.
        seed: picks the sampled entries. Defaults to `0`.
        detach_at_end: detach the tap when `fit` ends. Pass `False` to keep
            it (and the compiled step with it) across several `fit` calls
            on the same optimizer, then call `recorder.tap.detach()`
            yourself; re-attaching costs a new trace of the train step on
            TensorFlow and JAX. Defaults to `True`.
        start_step: training steps done before the first `fit` (a resumed
            run's checkpoint); the step numbering continues from it.
            Defaults to `0`.

    Example:

    ```python
    model.fit(ds, epochs=2, callbacks=[GradientRecorder("run/record", 10)])
    ```
    """

    kind = "gradients"
    records_epoch_zero = False

    def __init__(self, directory, every_steps: int = 50, every_epochs: int = 1,
                 seed: int = 0, detach_at_end: bool = True,
                 start_step: int = 0):
        super().__init__(directory, every_epochs)
        self.detach_at_end = detach_at_end
        self.every_steps = every_steps
        self.seed = seed
        self._step = start_step
        self._table = None
        self.tap = None

    def on_train_begin(self, logs=None):
        variables = tracked_variables(self.model)
        before = getattr(self.model.optimizer, "_kerasft_gradient_tap", None)
        tap = GradientTap.attach(
            self.model.optimizer, variables, store.GRADIENT_SAMPLE, self.seed
        )
        if tap is not before:
            # A train step compiled before the tap existed (an earlier fit
            # on tensorflow or jax) would never call it: make Keras build
            # the step again (it is traced at its first call, after this).
            self.model.make_train_function(force=True)
        self.tap = tap
        if self._table is None:
            self._table = store.TableWriter(
                self.directory / "grad_norms.csv",
                ["step", "epoch", *self.tap.names],
            )
        self._epoch = 0
        # The tap counts its applies from 0 in this fit; recorder step
        # `self._first + n` is apply n.
        self._first = self._step
        self.tap.schedule(self.every_steps, -self._step)
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        done = self._step - self._first
        steps = (self.params or {}).get("steps")
        self.tap.schedule(self.every_steps, -self._first, done + steps
                          if steps else -1, count=done)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every_steps == 0:
            from kerasft.backend.gradients import sync_state

            sync_state(self.model)
            norms = self.tap.read_norms()
            present = self.tap.read_present()
            row = {"step": self._step, "epoch": self._epoch + 1}
            # An empty cell: no gradient (frozen); "nan": a NaN gradient.
            row.update(
                (n, float(x) if p else None)
                for n, x, p in zip(self.tap.names, norms, present)
            )
            self._table.write(row)

    def record(self, epoch: int) -> None:
        recorded = self.tap.recorded_count()
        if not recorded:
            return  # no step of this fit was recorded yet
        norms = self.tap.read_norms()
        samples = self.tap.read_samples()
        # Variables with a non-finite gradient stay in, counted in
        # ``nonfinite``; only those that got no gradient are left out.
        keep = list(np.flatnonzero(self.tap.read_present()))
        if not keep:
            return
        names = [self.tap.names[i] for i in keep]
        arrays = [samples[i] for i in keep]
        out = self.histograms(names, arrays)
        out["stats"][:, store.STAT_NAMES.index("l2")] = norms[keep]
        out["step"] = np.array(self._first + recorded)
        store.write_npz(self.kind_dir / store.record_name(epoch), **out)

    def on_train_end(self, logs=None):
        if self.tap is not None and self.detach_at_end:
            # Leave the optimizer as the user gave it: saving it (or the
            # model) then holds only its own state. The next fit attaches
            # a new tap and rebuilds the train step.
            self.tap.detach()
            self.tap = None
        if self._table is not None:
            self._table.close()
            self._table = store.TableWriter(
                self._table.path, self._table.columns
            )
