"""What "torch, tensorflow and jax agree" means, in numbers.

Two runs of the same config from the same initial weights file, with the
same data order (numpy, by seed) and the same probe set, are compared. The
tolerances, and why:

* **Epoch-0 weight histograms: identical** (every count equal). The weights
  come from one file and the histograms are computed by the same numpy code
  on the same bins; any difference means a recorder or the weight loading
  differs between backends.
* **Epoch-0 probe activations: relative difference <= 1e-4 per block**
  (of each block's output L2 norm, mean and std over the probe batch). The
  forward pass is the same maths in float32; the backends only order their
  reductions differently (float32 epsilon 1.2e-7, accumulated over ~50
  blocks). transformers' PyTorch/TensorFlow equivalence tests allow
  1e-5 to 5e-4 max-abs on outputs; 1e-4 relative sits in that range.
* **Epoch-0 probe gradients: relative difference <= 1e-3 per layer** (of
  each variable's gradient L2 norm, mean and std). Backward passes
  accumulate more round-off than forward ones, one order of magnitude more
  room than activations.
* **After one short epoch of SGD** (same batches, same order), the bounds
  are measured, not derived: `LOSS_AFTER_EPOCH_REL` on the epoch's training
  and validation loss, and `HIST_AFTER_EPOCH_BINS`, the per-layer 1-D
  Wasserstein distance between weight histograms in units of the fixed bin
  width. They only mean something where the run itself is well conditioned:
  where a change of the start as small as float32 round-off stays that small
  after the epoch. The parity configuration (ResNet50, whole network
  training with BatchNorm in inference mode, SGD 1e-3, 4 steps of 16
  images) is therefore run with per-variable gradient clipping
  (`optimizer.clipnorm: 1`). Measured on torch (2026-11-25) by training twice,
  from a random-init start and from the same start with every weight
  multiplied by (1 + 1e-6 N(0, 1)):

  | parity config | step 2 loss | step 4 loss | val loss after 4 steps |
  | --- | --- | --- | --- |
  | no clipping (the config before) | 2.7e-5 | 1.7e-2 | 4.1e-2 |
  | `clipnorm: 1` | 8.8e-7 | 1.4e-6 | 2.1e-7 |

  Without clipping, the unnormalised random network (BatchNorm in inference
  mode from moving statistics 0/1, loss ~11) takes steps large enough to
  amplify a 1e-6 difference 40,000-fold in 4 steps: two CPUs that order
  their float32 sums differently then disagree by ~2e-3 (seen on an AVX-512
  machine: val_loss torch vs jax 1.9e-3), whatever the backends do. With
  clipped steps the amplification is ~1, so backend round-off (~1e-6)
  stays ~1e-6. (Setting the BatchNorm statistics from data instead, so
  that inference mode normalises, made it worse: with frozen statistics,
  channels of small variance have gains up to 1/sqrt(epsilon) and SGD
  1e-3 diverged within two steps.) Measured across backends with clipping
  on this project's CPU machine: see the README's table. The loss bound is
  10x the largest difference seen (Keras's own cross-framework test allows
  atol 1e-3 after one epoch; we can be stricter because the data order is
  shared). A histogram distance of 0.05 bins would take one entry in 20 of
  a tensor moving by a whole bin.

  With BatchNorm *training* (batch statistics) from random init, the same
  measurement gives step-1 gradient differences of ~2e-3 (median) and
  5% loss differences after 4 steps: the batch-statistics backward pass of
  a randomly initialised ResNet50 amplifies float32 round-off. Such runs
  are comparable in shape (the report's figures), not number for number.

**Mixed precision** (`train.precision` other than float32 in either run)
uses a second tier, `MIXED`. The weights are still float32 and come from
one file, so epoch-0 weight histograms must still be identical; everything
computed goes through 16-bit arithmetic (bfloat16 keeps 8 bits of mantissa,
epsilon 7.8e-3) and each backend rounds in its own places. Measured with
the parity test's configuration under `mixed_bfloat16` (torch, tensorflow,
jax from the same `--init-from`, CPU, 2026-11-25), worst over the three
pairs: probe activations 6.7e-5 relative (l2/mean/std of a block's output;
the aggregate averages the rounding out), probe gradient norms 1.9e-2
(mean and std vs the spread: 1.0e-2, 2.0e-2), training loss after 4 steps
1.4e-2 and validation loss 5.0e-2 relative, weight histograms after the
epoch up to 2.6 bins apart. The tier is about 5x those: activations 5e-4,
probe gradients 0.1, losses 0.2, histograms 10 bins. Mixed runs agree in
shape and to a few percent, not to float32 round-off; compare them with
each other, and with float32 runs only through this tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasft.compare.metrics import stat, wasserstein_fixed_bins

ACTIVATION_EPOCH0_REL = 1e-4
PROBE_GRADIENT_EPOCH0_REL = 1e-3
LOSS_AFTER_EPOCH_REL = 1e-5
HIST_AFTER_EPOCH_BINS = 0.05
# The mixed-precision tier (see the docstring): ~5x the worst measured.
MIXED_ACTIVATION_EPOCH0_REL = 5e-4
MIXED_PROBE_GRADIENT_EPOCH0_REL = 0.1
MIXED_LOSS_AFTER_EPOCH_REL = 0.2
MIXED_HIST_AFTER_EPOCH_BINS = 10.0


@dataclass(frozen=True)
class Tier:
    """One set of tolerances (the bounds above), named for the report."""

    name: str
    activation_epoch0_rel: float
    probe_gradient_epoch0_rel: float
    loss_after_epoch_rel: float
    hist_after_epoch_bins: float


FLOAT32 = Tier("float32", ACTIVATION_EPOCH0_REL, PROBE_GRADIENT_EPOCH0_REL,
               LOSS_AFTER_EPOCH_REL, HIST_AFTER_EPOCH_BINS)
MIXED = Tier("mixed precision", MIXED_ACTIVATION_EPOCH0_REL,
             MIXED_PROBE_GRADIENT_EPOCH0_REL, MIXED_LOSS_AFTER_EPOCH_REL,
             MIXED_HIST_AFTER_EPOCH_BINS)


def precision_of(run) -> str:
    """A run's `train.precision` (`float32` for runs from before it)."""
    config = getattr(run, "config", None) or {}
    return (config.get("train") or {}).get("precision", "float32")


def tier_for(a, b) -> Tier:
    """`MIXED` when either run computed in 16 bits, else `FLOAT32`."""
    if precision_of(a) != "float32" or precision_of(b) != "float32":
        return MIXED
    return FLOAT32


@dataclass
class Check:
    """One tolerance check between two runs."""

    name: str
    value: float
    tolerance: float
    where: str
    tier: str = FLOAT32.name

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.value) and self.value <= self.tolerance)

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILS"
        return (f"{self.name}: {self.value:.3g} (tolerance {self.tolerance:g}) "
                f"at {self.where}: {verdict}")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b) / np.maximum(np.abs(a), 1e-12)


def _worst(names, values, name, tol) -> Check:
    values = np.asarray(values, dtype=np.float64)
    i = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
    return Check(name, float(values[i]) if len(values) else float("nan"),
                 tol, str(names[i]) if len(names) else "-")


def parity_checks(a, b) -> list[Check]:
    """Every tolerance above, for runs `a` and `b` (from `load_run`), in
    the tier their configs' `train.precision` calls for (`tier_for`)."""
    tier = tier_for(a, b)
    checks = []
    wa, wb = a.records.get("weights"), b.records.get("weights")
    if wa is not None and wb is not None and 0 in wa.epochs and 0 in wb.epochs:
        ra, rb = wa[0], wb[0]
        diff = np.abs(ra["counts"] - rb["counts"]).sum(axis=1)
        checks.append(_worst(ra["names"], diff,
                             "epoch-0 weight histogram count difference", 0))
    aa, ab = a.records.get("activations"), b.records.get("activations")
    if aa is not None and ab is not None:
        ra, rb = aa[0], ab[0]
        for s in ("l2", "mean", "std"):
            checks.append(_worst(ra["names"], _rel(stat(ra, s), stat(rb, s)),
                                 f"epoch-0 probe activation {s} rel. diff",
                                 tier.activation_epoch0_rel))
    ga, gb = a.records.get("probe_gradients"), b.records.get("probe_gradients")
    if ga is not None and gb is not None:
        ra, rb = ga[0], gb[0]
        checks.append(_worst(ra["names"], _rel(ra["norms"], rb["norms"]),
                             "epoch-0 probe gradient norm rel. diff",
                             tier.probe_gradient_epoch0_rel))
        for s in ("mean", "std"):
            # a gradient mean is a difference of near-equal sums: compare it
            # relative to the gradient's spread, not to itself
            spread = np.maximum(stat(ra, "std"), 1e-12)
            checks.append(_worst(
                ra["names"], np.abs(stat(ra, s) - stat(rb, s)) / spread,
                f"epoch-0 probe gradient {s} diff / std",
                tier.probe_gradient_epoch0_rel))
    ma, mb = a.metrics, b.metrics
    if len(ma.get("loss", [])) and len(mb.get("loss", [])):
        for key in ("loss", "val_loss"):
            if key in ma and key in mb:
                checks.append(Check(
                    f"epoch-1 {key} rel. diff",
                    float(_rel(ma[key][:1], mb[key][:1])[0]),
                    tier.loss_after_epoch_rel, "epoch 1"))
    if wa is not None and wb is not None and 1 in wa.epochs and 1 in wb.epochs:
        edges = wa.bins["edges"]
        ra, rb = wa[1], wb[1]
        dist = [wasserstein_fixed_bins(x, y, e) / (e[1] - e[0])
                for x, y, e in zip(ra["counts"], rb["counts"], edges)]
        checks.append(_worst(ra["names"], dist,
                             "epoch-1 weight histogram distance (bins)",
                             tier.hist_after_epoch_bins))
    for c in checks:
        c.tier = tier.name
    return checks
