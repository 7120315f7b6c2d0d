"""What two runs can be compared on, and why not where they cannot.

`kerasft compare` lays any runs side by side; these rules decide which of
its views each pair of runs gets (the first run is the reference):

* **Any runs**: curves, test metrics, timing, the per-run table and the
  embeddings' k-NN accuracy (numbers of each run on its own).
* **The same layers** (`layer_difference` is None: the same
  ``model.arch`` and the same layer names in ``layers.json``, or in the
  weight records of runs without one): per-layer views, each run measured
  from its own start (relative weight change, per-stage change, weight
  quantiles over epochs, embeddings in one basis).
* **The same start and the same maths** (`start_difference` is None):
  views that put one run's numbers next to the other's, bin for bin and
  number for number (histogram distances, checkpoint weight differences,
  probe differences, the divergence table, the tolerance checks).
  The same start is the same ``env.json`` ``initial_weights_sha256``.
  The same maths is the same resolved config apart from `MATH_FREE`:
  keys that change neither the data, the model, the optimisation nor the
  probe set (names, where files live, worker counts, what else is
  recorded, how often checkpoints are kept, determinism and compilation
  switches, which order float32 round-off differently only, like another
  backend) and ``model.weights``, whose effect the fingerprint already
  decides (``--init-from`` writes a path there). ``train.precision`` may
  differ too: the tolerance tiers (`kerasft.compare.tolerances.tier_for`)
  compare a 16-bit run with a float32 one through the mixed-precision
  tier. Everything else (seed, plan, learning rate, optimizer, schedule,
  epochs, data, image size, probe and embedding sizes, ...) makes the
  numbers differ by design, so those views would only measure the design.
* **Histograms on common bins** (`histogram_difference` is None): two
  format-2 stores, or two format-1 stores with the same fixed bins.
"""

from __future__ import annotations

import numpy as np

# Config keys (dotted) whose difference leaves the numbers the same, or
# changes them only as another backend does (round-off order), or is
# judged elsewhere (the fingerprint for model.weights, the tolerance tier
# for train.precision). A "section.*" entry covers the whole section.
MATH_FREE = (
    "name", "description",
    "data.workers", "data.data_dir",
    "model.weights",
    "train.checkpoint_every", "train.verbose", "train.deterministic",
    "train.jit_compile", "train.precision",
    "record.enabled", "record.every_steps", "record.scalars_every_steps",
    "record.weights", "record.gradients", "record.update_ratios",
    "record.activations", "record.embeddings", "record.probe_gradients",
    "record.batchnorm", "record.feature_maps", "record.scalars",
    "record.weights_every_steps", "record.tensorboard",
    "record.attention", "record.attention_images",
    "record.attention_every_epoch", "record.attention_layer",
)
# Used only under `optimizer.learning_rate: auto` (then they set the rate).
LR_FIND = "lr_find."


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "lr_multipliers":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def resolved_config(run) -> dict:
    """A run's config as ``{"section.key": value}``, with the defaults of
    this kerasft for keys an older run's config.yaml lacks (what those
    runs did: a key is only ever added with the behaviour before it as
    its default)."""
    from kerasft.config import RunConfig

    return _flat(RunConfig().to_dict()) | _flat(run.config or {})


def config_differences(a, b) -> list[str]:
    """Every config key where runs `a` and `b` differ, as
    ``"key: value_a vs value_b"``, in config order."""
    ca, cb = resolved_config(a), resolved_config(b)
    keys = list(ca) + [k for k in cb if k not in ca]
    return [f"{k}: {ca.get(k)} vs {cb.get(k)}" for k in keys
            if ca.get(k) != cb.get(k)]


def math_differences(a, b) -> list[str]:
    """`config_differences` that change the numbers (not `MATH_FREE`)."""
    auto = "auto" in (resolved_config(a).get("optimizer.learning_rate"),
                      resolved_config(b).get("optimizer.learning_rate"))
    out = []
    for diff in config_differences(a, b):
        key = diff.split(":", 1)[0]
        if key in MATH_FREE or (key.startswith(LR_FIND) and not auto):
            continue
        out.append(diff)
    return out


def fingerprint(run) -> str | None:
    """The run's ``initial_weights_sha256`` (env.json), or None."""
    value = (run.env or {}).get("initial_weights_sha256")
    return str(value) if value else None


def start_difference(a, b) -> str | None:
    """Why runs `a` (the reference) and `b` do not share start and maths,
    naming the fingerprints and the config keys; None when they do."""
    fa, fb = fingerprint(a), fingerprint(b)
    reasons = []
    if fa is None or fb is None:
        missing = " and ".join(r.path.name for r, f in ((a, fa), (b, fb))
                               if f is None)
        reasons.append(
            f"{missing} records no initial-weight fingerprint "
            "(env.json initial_weights_sha256), so a common start cannot be "
            "told")
    elif fa != fb:
        reasons.append(
            f"they started from different weights (initial-weight "
            f"fingerprints {fa[:12]} vs {fb[:12]}); train both from one "
            f"start: kerasft train --init-from {a.path}")
    diffs = math_differences(a, b)
    if diffs:
        reasons.append("their configs differ where the numbers do: "
                       + "; ".join(diffs))
    return "; and ".join(reasons) or None


def _layer_names(run) -> list[str] | None:
    from kerasft.render.structure import read_layers

    layers = read_layers(run.path / "layers.json")
    if layers:
        return [str(layer.get("name")) for layer in layers
                if isinstance(layer, dict)]
    kind = (run.records or {}).get("weights")
    if kind is not None and kind.epochs:
        return [str(n) for n in kind[kind.epochs[0]]["names"]]
    return None


def layer_difference(a, b) -> str | None:
    """Why runs `a` and `b` have no per-layer views in common (different
    ``model.arch``, or different layer names), or None."""
    arch_a = resolved_config(a).get("model.arch")
    arch_b = resolved_config(b).get("model.arch")
    na, nb = _layer_names(a), _layer_names(b)
    if arch_a != arch_b:
        sizes = ""
        if na is not None and nb is not None:
            sizes = f", {len(na)} vs {len(nb)} layers with weights"
        return (f"different architectures (model.arch {arch_a} vs "
                f"{arch_b}{sizes}): their layers do not correspond")
    if na is None or nb is None:
        missing = " and ".join(r.path.name for r, n in ((a, na), (b, nb))
                               if n is None)
        return (f"{missing} records no layers (no layers.json and no weight "
                "records)")
    if na != nb:
        first = next((f"{x} vs {y}" for x, y in zip(na, nb) if x != y),
                     f"{len(na)} vs {len(nb)} layers")
        return (f"their layers differ although both are {arch_a} (first "
                f"difference: {first})")
    return None


def histogram_difference(a, b) -> str | None:
    """Why the weight histograms of `a` and `b` cannot share bins, or None
    (also None when either has no weight records: nothing to put on bins)."""
    wa, wb = (a.records or {}).get("weights"), (b.records or {}).get("weights")
    if wa is None or wb is None:
        return None
    ea, eb = wa.bins, wb.bins
    if bool(ea) != bool(eb):
        old, new = (a, b) if ea else (b, a)
        return (
            f"{old.path.name} was recorded by an older kerasft (store format "
            "1: histogram bins fixed from the initial values, in bins.npz) "
            f"and {new.path.name} with format 2 (bins per record); their "
            f"histograms cannot be put on common bins. Train "
            f"{old.path.name}'s config again with this kerasft (--init-from "
            "it to keep its start)")
    if ea and (not np.array_equal(ea.get("names"), eb.get("names"))
               or not np.array_equal(ea["edges"], eb["edges"])):
        return ("their format-1 weight histograms use different fixed bins "
                "(they started from different weights)")
    return None
