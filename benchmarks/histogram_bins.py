"""How many entries fall outside their histogram bins, per variable kind.

Not a timing: the measurement behind issue 9's target (at every recorded
epoch, no variable with more than 5% of its entries outside its bins).
Reads run directories only (numpy), so it measures a store written by any
kerasft version, format 1 (bins fixed from the initial values) or 2.

    python benchmarks/histogram_bins.py RUN_DIR [RUN_DIR ...]
    python benchmarks/histogram_bins.py --checkpoints RUN_DIR

For each run, each histogram kind and each variable kind (kernel, bias,
BatchNorm gamma, BatchNorm beta, other), it prints per epoch the number of
variables, the worst variable's share outside its bins, and how many
variables have more than 5% and more than 50% outside.

With ``--checkpoints`` it applies both bin rules -- format 1's (bins fixed
from the initial values, `store.fixed_edges`) and format 2's
(`store.dyadic_edges` of each epoch's values) -- to the same weights, read
from ``initial.weights.h5`` and the per-epoch checkpoints (h5py), BatchNorm
moving statistics included.
"""

from __future__ import annotations

import sys

import numpy as np

from kerasft.record import store
from kerasft.record.store import load_run

TARGET = 0.05


def variable_kind(name: str) -> str:
    tail = name.rsplit("/", 1)[-1]
    return {"kernel": "kernel", "bias": "bias", "gamma": "BN gamma",
            "beta": "BN beta", "moving_mean": "BN moving mean",
            "moving_variance": "BN moving variance"}.get(tail, "other")


def _line(epoch, k, names, share):
    worst = int(np.argmax(share))
    return (f"  {epoch:5d} | {k:18s} | {len(share):4d} | {share[worst]:7.1%} "
            f"({names[worst]}) | {int((share > TARGET).sum()):3d} | "
            f"{int((share > 0.5).sum()):3d}")


def from_checkpoints(path: str) -> None:
    import json
    from pathlib import Path

    from kerasft.compare.metrics import checkpoint_variables, read_checkpoint

    run = Path(path)
    mapping = checkpoint_variables(
        run, json.loads((run / "layers.json").read_text()))
    initial = read_checkpoint(run / "initial.weights.h5", mapping)
    names = [n for n in mapping if n in initial]
    old = {n: store.fixed_edges(initial[n]) for n in names}
    print(f"== {run.name}: both rules on the same weights (checkpoints)")
    print("  epoch | variable kind | variables | worst share outside "
          "(variable) | > 5% | > 50%")
    for ckpt in sorted((run / "checkpoints").glob("epoch-*.weights.h5")):
        epoch = int(ckpt.name[6:9])
        values = read_checkpoint(ckpt, mapping)
        kinds = np.array([variable_kind(n) for n in names])
        for rule in ("format 1", "format 2"):
            share = []
            for n in names:
                v = np.asarray(values[n], np.float64).ravel()
                e = old[n] if rule == "format 1" else store.dyadic_edges(v)
                c = store.histogram(v, e)
                share.append((c[0] + c[-1]) / max(c.sum(), 1))
            share = np.array(share)
            for k in sorted(set(kinds)):
                m = kinds == k
                print(_line(epoch, f"{k} ({rule})",
                            [n for n, y in zip(names, m) if y], share[m]))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--checkpoints"]:
        for path in argv[1:]:
            from_checkpoints(path)
        return 0
    for path in argv:
        run = load_run(path)
        print(f"== {run.path.name} (backend {run.env.get('backend')}, "
              f"store format {1 if run.records['weights'].bins else 2})")
        for kind in ("weights", "gradients"):
            rec = run.records.get(kind)
            if rec is None:
                continue
            print(f"  {kind}: epoch | variable kind | variables | worst "
                  "share outside (variable) | > 5% | > 50%")
            for epoch in rec.epochs:
                r = rec[epoch]
                counts = r["counts"].astype(np.float64)
                share = (counts[:, 0] + counts[:, -1]) / np.maximum(
                    counts.sum(axis=1), 1)
                kinds = np.array([variable_kind(str(n)) for n in r["names"]])
                for k in ("kernel", "bias", "BN gamma", "BN beta", "other"):
                    m = kinds == k
                    if m.any():
                        print(_line(epoch, k, [str(n) for n in
                                               r["names"][m]], share[m]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
