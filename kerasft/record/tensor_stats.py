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


# Entries per row of the padded layout `TensorStats` reduces in (see there).
CHUNK = 4096
# `TensorStats.shared`: objects kept (each holds its layout's index arrays
# on the device, ~80 MB for a ResNet50's weights).
_SHARED_MAX = 4
_SHARED: dict = {}


class TensorStats:
    """Histogram counts, `STAT_NAMES` and non-finite counts of fixed tensors.

    Each call bins the tensors by the store's bin rule (`store.bin_grid`,
    from each tensor's finite min and max, found in a first pass on the
    device), as `store.dyadic_edges` does on the host, unless given edges.

    How: all tensors are laid out as the rows of one (R, `CHUNK`) float32
    matrix, each tensor zero-padded to whole rows, and every statistic is
    a few whole-matrix operations: row reductions (tree-summed, so as
    accurate as a per-tensor sum), then a segment reduction of the R row
    results per tensor, and one `bincount` for every histogram. The number
    of operations does not grow with the number of tensors: a ResNet50's
    214 tensors cost ~40 operations instead of ~6,400, which matters most
    where each operation is dispatched on its own (eager torch).

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
        c = self.chunk = max(1, min(CHUNK, max(self.sizes, default=1)))
        rows = [max(1, -(-n // c)) for n in self.sizes]
        self._pads = [r * c - n for r, n in zip(rows, self.sizes)]
        first_row = np.concatenate([[0], np.cumsum(rows)[:-1]])
        # host-side layout constants, sent to the device at the first call
        self._host = {
            "row_tensor": np.repeat(np.arange(len(rows)), rows).astype(
                np.int32),
            "valid": np.concatenate([
                np.arange(r * c) < n for r, n in zip(rows, self.sizes)
            ]).reshape(-1, c),
        }
        samples = [np.arange(n) if (i := sample_index(n)) is None else i
                   for n in self.sizes]
        width = max(len(i) for i in samples)
        self._host["sample"] = np.stack([
            np.pad(start * c + i, (0, width - len(i))).astype(np.int32)
            for start, i in zip(first_row, samples)])
        self._host["sample_valid"] = np.stack([
            np.arange(width) < len(i) for i in samples])
        self._const = None
        self._fn = backend.compile_function(self._reduce)
        self._range_fn = backend.compile_function(self._range)

    @classmethod
    def shared(cls, shapes, bins: int = store.NUM_BINS) -> "TensorStats":
        """One object per (shapes, bins), kept for the last few asked for:
        recorders made anew (each phase of a study, each benchmark round)
        reuse its compiled functions instead of compiling them again."""
        key = (tuple(tuple(int(d) for d in s) for s in shapes), bins)
        if key not in _SHARED:
            while len(_SHARED) >= _SHARED_MAX:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[key] = cls(shapes, bins)
        return _SHARED[key]

    def _constants(self) -> dict:
        if self._const is None:
            self._const = {k: keras.ops.convert_to_tensor(v)
                           for k, v in self._host.items()}
        return self._const

    def _layout(self, values):
        """The tensors as the rows of one (R, chunk) float32 matrix."""
        ops = keras.ops
        flat = []
        for x, pad in zip(values, self._pads):
            v = ops.reshape(ops.cast(x, "float32"), (-1,))
            flat.append(ops.pad(v, [[0, pad]]) if pad else v)
        return ops.reshape(ops.concatenate(flat), (-1, self.chunk))

    def _per_tensor(self, row_values, row_tensor, reduce="sum"):
        """(R,) per-row results -> (V,) per-tensor sums or maxima."""
        fn = (keras.ops.segment_sum if reduce == "sum"
              else keras.ops.segment_max)
        # (sorted=False: TensorFlow takes num_segments only then)
        return fn(row_values, row_tensor, num_segments=len(self.sizes))

    def _min_max(self, x, finite, row_tensor, some=None):
        """Each tensor's finite min and max; (inf, -inf) where it has none
        (TensorFlow's segment max starts from -FLT_MAX, not -inf). `some`:
        (V,) whether each tensor has a finite entry, if already known."""
        ops = keras.ops
        lo = -self._per_tensor(-ops.min(ops.where(finite, x, np.inf), axis=1),
                               row_tensor, "max")
        hi = self._per_tensor(ops.max(ops.where(finite, x, -np.inf), axis=1),
                              row_tensor, "max")
        if some is None:
            some = self._per_tensor(
                ops.cast(ops.any(finite, axis=1), "float32"), row_tensor,
                "max") > 0
        return ops.where(some, lo, np.inf), ops.where(some, hi, -np.inf)

    def _range(self, values, const):
        ops = keras.ops
        x = self._layout(values)
        finite = ops.logical_and(ops.isfinite(x), const["valid"])
        return ops.stack(self._min_max(x, finite, const["row_tensor"]),
                         axis=1)

    def edges(self, values) -> np.ndarray:
        """(V, B+1) float64: the bin rule's edges for `values`."""
        ranges = np.asarray(keras.ops.convert_to_numpy(
            self._range_fn(list(values), self._constants())),
            dtype=np.float64)
        return np.stack([store.grid_edges(*store.bin_grid(lo, hi, self.bins),
                                          self.bins) for lo, hi in ranges])

    def _reduce(self, values, lower, upper, initial, const):
        ops = keras.ops
        b, v_count = self.bins, len(self.sizes)
        seg = const["row_tensor"]
        x = self._layout(values)
        is_finite = ops.isfinite(x)
        finite = ops.logical_and(is_finite, const["valid"])
        out = {}

        # Histograms, numpy's own method: the bin from the uniform
        # spacing, then one step of correction by exact comparison with
        # the edges. Ids: tensor * (b + 4) + (under-flow 0, bins 1..b,
        # over-flow b+1, non-finite b+2, padding b+3).
        lo_row = ops.expand_dims(ops.take(lower[:, 0], seg), 1)
        scale_row = ops.expand_dims(
            ops.take(b / (upper - lower[:, 0]), seg), 1)
        g = ops.cast(ops.clip(ops.floor(
            ops.where(finite, x - lo_row, 0.0) * scale_row), 0, b - 1),
            "int32")
        base = ops.expand_dims(seg * b, 1)
        lower_flat = ops.reshape(lower, (-1,))
        k = g + 1 - ops.cast(x < ops.take(lower_flat, base + g), "int32")
        k = k + ops.cast(ops.logical_and(
            g < b - 1,
            x >= ops.take(lower_flat, base + ops.minimum(g + 1, b - 1))),
            "int32")
        k = ops.where(x > ops.expand_dims(ops.take(upper, seg), 1), b + 1, k)
        k = ops.where(is_finite, k, b + 2)
        k = ops.where(const["valid"], k, b + 3)
        ids = ops.reshape(ops.expand_dims(seg * (b + 4), 1) + k, (-1,))
        counts = ops.reshape(backend.bincount(ids, v_count * (b + 4)),
                             (v_count, b + 4))
        out["counts"] = counts[:, : b + 3]

        # Moments over the finite entries (their count from the counts).
        nf = ops.convert_to_tensor(np.array(self.sizes, np.int32)) - \
            ops.cast(counts[:, b + 2], "int32")
        n = ops.cast(ops.maximum(nf, 1), "float32")
        vz = ops.where(finite, x, 0.0)
        mean = self._per_tensor(ops.sum(vz, axis=1), seg) / n
        dev = ops.where(finite, x - ops.expand_dims(ops.take(mean, seg), 1),
                        0.0)
        lo, hi = self._min_max(x, finite, seg, some=nf > 0)
        out["moments"] = ops.stack([
            mean,
            ops.sqrt(self._per_tensor(ops.sum(dev * dev, axis=1), seg) / n),
            lo,
            hi,
            ops.sqrt(self._per_tensor(ops.sum(vz * vz, axis=1), seg)),
        ], axis=1)

        # Quantiles: each tensor's strided sample, sorted (padding last).
        s = ops.take(ops.reshape(x, (-1,)), const["sample"])
        ok = ops.logical_and(ops.isfinite(s), const["sample_valid"])
        ns = ops.sum(ops.cast(ok, "int32"), axis=1)
        s = ops.sort(ops.where(ok, s, np.inf), axis=1)
        last = ops.expand_dims(ops.maximum(ns - 1, 0), 1)
        prev = ops.floor_divide(
            ops.convert_to_tensor(_Q[None, :], "int32") * last, 100)
        out["qv"] = ops.stack([
            ops.take_along_axis(s, prev, axis=1),
            ops.take_along_axis(s, ops.minimum(prev + 1, last), axis=1),
        ], axis=2)
        out["ns"] = ns
        if initial is not None:
            d = x - self._layout(initial)
            out["delta"] = ops.sqrt(self._per_tensor(ops.sum(d * d, axis=1),
                                                     seg))
        return out

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
                       None if initial is None else list(initial),
                       self._constants())
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
