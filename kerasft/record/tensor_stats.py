"""Histograms and summary statistics of many tensors, reduced on the device.

`store.histogram` and `store.summary_stats` are the reference (numpy, on the
host). `TensorStats` computes the same numbers with `keras.ops` where the
tensors live, in one compiled function for all of them, and copies only the
counts and a few numbers per tensor to the host: a ResNet50's 23.6M weights
never cross to the host. Values are read as float32 whatever their dtype.

Exactness: counts equal `np.histogram` on the float64 edges, because a
float32 value `v` satisfies ``v >= e`` exactly when ``v >= ceil32(e)`` (the
smallest float32 not below `e`), and ``v > e`` exactly when
``v > floor32(e)``. Mean, std, min, max, l2 are float32 reductions (within
float32 round-off of the float64 reference); the quantiles come from the
same strided sample as `summary_stats`, sorted on the device, with the
interpolation done on the host in float64 as numpy does.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasft import backend
from kerasft.record import store

_Q = np.array([1, 25, 50, 75, 99])  # the quantiles of STAT_NAMES, in %


def _ceil32(x: np.ndarray) -> np.ndarray:
    f = x.astype(np.float32)
    return np.where(f < x, np.nextafter(f, np.float32(np.inf)), f)


def _floor32(x: np.ndarray) -> np.ndarray:
    f = x.astype(np.float32)
    return np.where(f > x, np.nextafter(f, np.float32(-np.inf)), f)


def sample_index(size: int) -> np.ndarray | None:
    """The strided quantile sample of `summary_stats` (None: all entries)."""
    if size <= store.QUANTILE_SAMPLE:
        return None
    return np.linspace(0, size - 1, store.QUANTILE_SAMPLE).astype(np.int64)


class TensorStats:
    """Histogram counts, `STAT_NAMES` and non-finite counts of fixed tensors.

    Each call bins the tensors by the store's bin rule (`store.bin_grid`,
    from each tensor's finite min and max, found in a first pass on the
    device), as `store.dyadic_edges` does on the host, unless given edges.

    Args:
        shapes: the tensors' shapes (fixed; a new shape needs a new object).
        bins: the number of bins. Defaults to `store.NUM_BINS`.

    Example:

    ```python
    stats = TensorStats([v.shape for v in model.weights])
    out = stats([v.value for v in model.weights])
    out["edges"], out["counts"], out["stats"], out["nonfinite"]
    ```
    """

    def __init__(self, shapes, bins: int = store.NUM_BINS):
        self.sizes = [int(np.prod(s)) for s in shapes]
        self.bins = bins
        self._samples = [sample_index(n) for n in self.sizes]
        self._fn = backend.compile_function(self._reduce)
        self._range_fn = backend.compile_function(self._range)

    @staticmethod
    def _range(values):
        ops = keras.ops
        out = []
        for x in values:
            v = ops.reshape(ops.cast(x, "float32"), (-1,))
            finite = ops.isfinite(v)
            out.append(ops.stack([ops.min(ops.where(finite, v, np.inf)),
                                  ops.max(ops.where(finite, v, -np.inf))]))
        return ops.stack(out)

    def edges(self, values) -> np.ndarray:
        """(V, B+1) float64: the bin rule's edges for `values`."""
        ranges = np.asarray(keras.ops.convert_to_numpy(
            self._range_fn(list(values))), dtype=np.float64)
        return np.stack([store.grid_edges(*store.bin_grid(lo, hi, self.bins),
                                          self.bins) for lo, hi in ranges])

    def _reduce(self, values, lower, upper, initial):
        ops = keras.ops
        b = self.bins
        out = {"counts": [], "moments": [], "qv": [], "ns": [], "delta": []}
        for i, x in enumerate(values):
            v = ops.reshape(ops.cast(x, "float32"), (-1,))
            finite = ops.isfinite(v)
            nf = ops.sum(ops.cast(finite, "int32"))
            n = ops.cast(ops.maximum(nf, 1), "float32")
            vz = ops.where(finite, v, 0.0)
            mean = ops.sum(vz) / n
            dev = ops.where(finite, v - mean, 0.0)
            out["moments"].append(ops.stack([
                mean,
                ops.sqrt(ops.sum(dev * dev) / n),
                ops.min(ops.where(finite, v, np.inf)),
                ops.max(ops.where(finite, v, -np.inf)),
                ops.sqrt(ops.sum(vz * vz)),
            ]))
            # numpy's own method: the bin from the uniform spacing, then
            # one step of correction by exact comparison with the edges.
            lo_i, lower_i = lower[i][0], lower[i]
            scale = b / (upper[i] - lo_i)
            g = ops.cast(ops.clip(ops.floor(
                ops.where(finite, v - lo_i, 0.0) * scale), 0, b - 1), "int32")
            k = g + 1 - ops.cast(v < ops.take(lower_i, g), "int32")
            k = k + ops.cast(ops.logical_and(
                g < b - 1, v >= ops.take(lower_i, ops.minimum(g + 1, b - 1))),
                "int32")
            k = ops.where(v > upper[i], b + 1, k)
            k = ops.where(finite, k, b + 2)
            out["counts"].append(backend.bincount(k, b + 3))
            s = v if self._samples[i] is None else ops.take(
                v, self._samples[i])
            ok = ops.isfinite(s)
            ns = ops.sum(ops.cast(ok, "int32"))
            s = ops.sort(ops.where(ok, s, np.inf))
            last = ops.maximum(ns - 1, 0)
            prev = ops.floor_divide(
                ops.multiply(ops.convert_to_tensor(_Q, "int32"), last), 100)
            out["qv"].append(ops.stack([
                ops.take(s, prev), ops.take(s, ops.minimum(prev + 1, last))
            ], axis=1))
            out["ns"].append(ns)
            if initial is not None:
                d = v - ops.reshape(ops.cast(initial[i], "float32"), (-1,))
                out["delta"].append(ops.sqrt(ops.sum(d * d)))
        return {k: ops.stack(v) for k, v in out.items() if v}

    def __call__(self, values, initial=None,
                 edges: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The records of `values` (backend tensors or variables' values).

        Args:
            values: one tensor per shape, in order.
            initial: tensors of the same shapes; adds ``delta`` (V,) =
                ||values - initial||. Defaults to `None`.
            edges: (V, B+1) float64 bin edges to use instead of the bin
                rule's. Defaults to `None`.

        Returns:
            ``edges`` (V, B+1) float64, ``counts`` (V, B+2) int64 (under-flow, B bins, over-flow: finite
            values only), ``stats`` (V, len(STAT_NAMES)) float64 over the
            finite values (NaN where there are none), ``nonfinite`` (V,)
            int64, and ``delta`` if `initial` was given.
        """
        values = list(values)
        edges = (self.edges(values) if edges is None
                 else np.asarray(edges, dtype=np.float64))
        lower = keras.ops.convert_to_tensor(_ceil32(edges[:, :-1]))
        upper = keras.ops.convert_to_tensor(_floor32(edges[:, -1]))
        out = self._fn(values, lower, upper,
                       None if initial is None else list(initial))
        out = {k: np.asarray(keras.ops.convert_to_numpy(v))
               for k, v in out.items()}
        counts = out["counts"].astype(np.int64)
        moments = out["moments"].astype(np.float64)
        ns = out["ns"].astype(np.int64)
        a, b = out["qv"][..., 0].astype(np.float64), out["qv"][..., 1].astype(
            np.float64)
        # numpy's "linear" quantile: virtual index q * (n - 1), its
        # fraction t, and _lerp's two-sided form.
        t = ((_Q[None, :] * np.maximum(ns - 1, 0)[:, None]) % 100) / 100
        with np.errstate(invalid="ignore"):  # rows with no finite value
            q = np.where(t >= 0.5, b - (b - a) * (1 - t),
                         a + (b - a) * t)
        q[ns == 0] = np.nan
        nonfinite = counts[:, -1]
        stats = np.concatenate([moments, q], axis=1)
        stats[nonfinite == np.asarray(self.sizes)] = np.nan
        result = {"edges": edges, "counts": counts[:, :-1], "stats": stats,
                  "nonfinite": nonfinite}
        if "delta" in out:
            result["delta"] = out["delta"].astype(np.float64)
        return result
