"""`kerasft compare`: two or more runs -> side-by-side figures + one page.

The first run is the reference; every other run is measured against it.
Runs of different models are refused, and so are runs whose stores put
histograms on bins that cannot be reconciled (a format-1 store, bins fixed
from the initial values, against a format-2 one; or two format-1 stores
with different bins). Histograms of format-2 stores are compared on their
common dyadic grid (`kerasft.record.store.common_histograms`). Runs with
different initial-weight fingerprints or seeds get a warning; a run
compared with itself gets a note.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasft.compare.metrics import (
    checkpoint_variables,
    first_divergence,
    histogram_distances,
    read_checkpoint,
    relative_difference,
    stat,
)
from kerasft.compare.tolerances import parity_checks, tier_for
from kerasft.errors import RunDirError
from kerasft.record.store import load_run
from kerasft.render.base import DPI, log_scale, new_figure, plain_text
from kerasft.rundir import atomic_write, unique_dir, write_json

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# A per-layer relative difference above this counts as "diverged" when the
# table looks for the layer where divergence starts.
DIVERGENCE_THRESHOLD = 1e-3


@dataclass
class Comparison:
    """What `compare_runs` made."""

    index: Path
    figures: list[Path]
    warnings: list[str]
    divergences: list[dict]
    checks: dict

    @property
    def failed(self) -> list[str]:
        """``"pair: check"`` for every tolerance check that failed."""
        return [f"{pair}: {c['name']}" for pair, rows in self.checks.items()
                for c in rows if not c["ok"]]


def _label(run) -> str:
    """A short legend label: the backend and the run's start time."""
    name = run.path.name
    stamp = name[9:15] if len(name) > 15 and name[8] == "-" else name
    if stamp.isdigit():
        stamp = f"{stamp[:2]}:{stamp[2:4]}:{stamp[4:]}"
    return f"{run.env.get('backend', '?')} ({stamp})"


def _check_comparable(runs) -> list[str]:
    ref = runs[0]
    warnings = []
    key = lambda r: (r.config.get("model", {}).get("arch"),  # noqa: E731
                     r.config.get("data", {}).get("image_size"),
                     len(r.data.get("class_names", [])))
    for r in runs[1:]:
        if key(r) != key(ref):
            raise RunDirError(
                f"cannot compare {r.path.name} with {ref.path.name}: "
                f"different model (arch, image size, classes) {key(r)} vs "
                f"{key(ref)}. Compare runs of one config."
            )
        wa, wb = ref.records.get("weights"), r.records.get("weights")
        if wa is not None and wb is not None:
            ea, eb = wa.bins, wb.bins
            if bool(ea) != bool(eb):
                old, new = (ref, r) if ea else (r, ref)
                raise RunDirError(
                    f"cannot compare {r.path.name} with {ref.path.name}: "
                    f"{old.path.name} was recorded by an older kerasft (store "
                    "format 1: histogram bins fixed from the initial values, "
                    f"in bins.npz) and {new.path.name} with format 2 (bins "
                    "per record); their histograms cannot be put on common "
                    f"bins. Train {old.path.name}'s config again with this "
                    "kerasft (--init-from it to keep its start)."
                )
            if ea and (not np.array_equal(ea.get("names"), eb.get("names"))
                       or not np.array_equal(ea["edges"], eb["edges"])):
                raise RunDirError(
                    f"cannot compare {r.path.name} with {ref.path.name}: "
                    "their weight histograms use different bins (they "
                    "started from different weights). Start both from the "
                    "same weights: kerasft train --init-from "
                    f"{ref.path}"
                )
        same = _same_run(ref, r)
        if same:
            warnings.append(
                f"{r.path.name} is the same run as {ref.path.name} ({same}): "
                "every difference is 0 by construction and the checks say "
                "nothing about backends"
            )
        fa = ref.env.get("initial_weights_sha256")
        fb = r.env.get("initial_weights_sha256")
        if fa and fb and fa != fb:
            warnings.append(
                f"{r.path.name} did not start from the same weights as "
                f"{ref.path.name} (initial weight fingerprints differ)"
            )
        if ref.config.get("seed") != r.config.get("seed"):
            warnings.append(
                f"{r.path.name} uses seed {r.config.get('seed')}, "
                f"{ref.path.name} seed {ref.config.get('seed')}: data order "
                "and probe sets differ"
            )
    return warnings


def _same_run(a, b) -> str | None:
    """How runs `a` and `b` are one run (same directory, or a copy with the
    same run id, the directory name), or None."""
    if a.path.resolve() == b.path.resolve():
        return "the same directory"
    if a.path.name == b.path.name:
        return f"the same run id {a.path.name}, in two places"
    return None


def _integer_epochs(ax, epochs) -> None:
    """Integer epoch ticks; one or two epochs get half an epoch of margin
    (matplotlib's default margin around one point is 0.95 to 1.05)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [int(e) for e in epochs if np.isfinite(e)]
    if not epochs:
        return
    lo, hi = min(epochs), max(epochs)
    if hi - lo < 4:
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_xticks(range(lo, hi + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _title(fig, text: str, width_in: float, size: float = 12) -> None:
    """A figure title wrapped to the figure's width, so no end is cut off
    (about 0.55 em per character)."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.55 * size)))
    fig.suptitle(textwrap.fill(text, chars), fontsize=size)


def _curves(runs):
    fig = new_figure(15, 4.2)
    axes = fig.subplots(1, 3)
    for i, r in enumerate(runs):
        m, c = r.metrics, COLORS[i % len(COLORS)]
        # the first run is drawn biggest, so identical curves stay visible
        size, width = 9 - 2.5 * i, 3.2 - 0.9 * i
        steps = r.tables.get("scalars", {})
        if "loss" in steps:
            axes[0].plot(steps["step"], steps["loss"], "-", color=c,
                         lw=max(width, 0.8), label=_label(r), alpha=0.8)
        ep = m.get("epoch", [])
        for ax, key in zip(axes[1:], ("loss", "accuracy")):
            if key in m:
                ax.plot(ep, m[key], "-o", color=c, ms=max(size, 3),
                        lw=max(width, 0.8), label=f"{_label(r)} train")
            if f"val_{key}" in m:
                ax.plot(ep, m[f"val_{key}"], "--s", color=c, ms=max(size, 3),
                        alpha=0.7, label=f"{_label(r)} validation")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("loss (running mean within the epoch)")
    axes[0].set_title("training loss per step")
    all_epochs = [e for r in runs for e in r.metrics.get("epoch", [])]
    for ax, key in zip(axes[1:], ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key} per epoch")
        _integer_epochs(ax, all_epochs)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    _title(fig, "Runs overlaid (the reference drawn widest): curves on top "
           "of each other mean the backends agree", 15)
    return fig


def _per_layer(runs, kind, fn, names_key="names"):
    """{pair label: (names, epochs, matrix[layer, epoch])} of fn(rec_a, rec_b)."""
    ref = runs[0]
    out = {}
    ka = ref.records.get(kind)
    for r in runs[1:]:
        kb = r.records.get(kind)
        if ka is None or kb is None:
            continue
        epochs = [e for e in ka.epochs if e in kb.epochs]
        if not epochs:
            continue
        names = list(ka[epochs[0]][names_key])
        mat = np.stack([fn(ka[e], kb[e], ka, kb) for e in epochs], axis=1)
        out[_label(r)] = (names, epochs, mat)
    return out


def _rel_stat(name):
    def fn(a, b, kind_a, kind_b):
        x, y = stat(a, name), stat(b, name)
        return np.abs(x - y) / np.maximum(np.abs(x), 1e-12)
    return fn


def _checkpoint_diffs(runs):
    """Relative difference of every kernel per checkpointed epoch."""
    ref = runs[0]
    if not any((ref.path / "checkpoints").glob("epoch-*.weights.h5")):
        return {}
    layers = json.loads((ref.path / "layers.json").read_text())
    mapping = checkpoint_variables(ref.path, layers)
    mapping = {k: v for k, v in mapping.items() if k.endswith("/kernel")}
    out = {}
    for r in runs[1:]:
        ca = sorted((ref.path / "checkpoints").glob("epoch-*.weights.h5"))
        epochs, cols = [], []
        for path in ca:
            other = r.path / "checkpoints" / path.name
            if not other.exists():
                continue
            wa = read_checkpoint(path, mapping)
            wb = read_checkpoint(other, mapping)
            cols.append([relative_difference(wa[k], wb[k]) if k in wa and k in wb
                         else np.nan for k in mapping])
            epochs.append(int(path.name[6:9]))
        if epochs:
            out[_label(r)] = (list(mapping), epochs, np.array(cols).T)
    return out


def _heatmaps(data, title, cbar, log=True):
    if not data:
        return None
    n = len(data)
    fig = new_figure(5.5 * n + 1, 7)
    axes = np.atleast_1d(fig.subplots(1, n))
    from matplotlib.colors import LogNorm

    for ax, (label, (names, epochs, mat)) in zip(axes, data.items()):
        m = np.where(np.isfinite(mat), mat, np.nan)
        positive = m[np.isfinite(m) & (m > 0)]
        norm = None
        if not positive.size:
            # identical everywhere: say so instead of a meaningless scale
            from matplotlib.colors import Normalize

            norm = Normalize(vmin=0, vmax=1)
            ax.text(0.5, 0.5, "0 everywhere:\nidentical", ha="center",
                    va="center", transform=ax.transAxes, fontsize=14,
                    color="white", weight="bold")
        elif log:
            lo = max(positive.min(), 1e-9)
            norm = LogNorm(vmin=lo, vmax=max(positive.max(), lo * 10))
            m = np.where(m > 0, m, lo)  # exact agreement drawn at the floor
        im = ax.imshow(m, aspect="auto", interpolation="nearest", norm=norm,
                       cmap="magma")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        step = max(1, len(names) // 25)
        ax.set_yticks(range(0, len(names), step),
                      [str(names[i]).replace("_block", "_b")
                       for i in range(0, len(names), step)], fontsize=6)
        ax.set_xlabel("epoch")
        ax.set_title(f"reference vs {label}", fontsize=9)
        fig.colorbar(im, ax=ax, label=cbar)
    _title(fig, title, 5.5 * n + 1)
    return fig


def _probe_lines(runs, tier):
    fig = new_figure(12, 4.5)
    axes = fig.subplots(1, 2)
    ref = runs[0]
    drew = False
    for i, r in enumerate(runs[1:], start=1):
        c = COLORS[i % len(COLORS)]
        for ax, kind, value in (
            (axes[0], "activations", lambda a, b: np.abs(stat(a, "l2") - stat(b, "l2")) / np.maximum(stat(a, "l2"), 1e-12)),
            (axes[1], "probe_gradients", lambda a, b: np.abs(a["norms"] - b["norms"]) / np.maximum(a["norms"], 1e-12)),
        ):
            ka, kb = ref.records.get(kind), r.records.get(kind)
            if ka is None or kb is None:
                continue
            epochs = [e for e in ka.epochs if e in kb.epochs]
            for e, style in ((epochs[0], "-"), (epochs[-1], ":")):
                v = value(ka[e], kb[e])
                ax.plot(np.maximum(v, 1e-12), style, color=c,
                        label=f"{_label(r)}, epoch {e}")
                drew = True
    axes[0].set_title("probe activations: rel. diff of each block's L2 norm")
    axes[1].set_title("probe gradients: rel. diff of each layer's gradient norm")
    for ax, tol in zip(axes, (tier.activation_epoch0_rel,
                              tier.probe_gradient_epoch0_rel)):
        log_scale(ax)
        ax.axhline(tol, color="k", lw=0.8, ls="--")
        ax.text(0, tol * 1.3, f"epoch-0 tolerance {tol:g} ({tier.name} tier)",
                fontsize=8)
        ax.set_xlabel("layer depth (input -> output)")
        ax.set_ylabel("relative difference vs reference (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _title(fig, "Same probe batch through each run: differences per layer "
           "(exact agreement drawn at 1e-12)", 12)
    return fig if drew else None


def _embeddings(runs):
    kinds = [r.records.get("embeddings") for r in runs]
    if any(k is None or not k.epochs for k in kinds):
        return None
    from kerasft.render.embeddings import fixed_basis, project

    ref_last = kinds[0][kinds[0].epochs[-1]]
    mean, comps = fixed_basis(ref_last["features"])
    fig = new_figure(4.2 * len(runs), 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(runs), sharex=True, sharey=True))
    for ax, r, k in zip(axes, runs, kinds):
        rec = k[k.epochs[-1]]
        xy = project(rec["features"], mean, comps)
        ax.scatter(xy[:, 0], xy[:, 1], c=rec["labels"], cmap="tab10", s=10)
        ax.set_title(f"{_label(r)}\nepoch {k.epochs[-1]}", fontsize=8)
        ax.set_xlabel("PC1 (reference basis)")
    axes[0].set_ylabel("PC2 (reference basis)")
    _title(fig, "Probe-set embeddings in one basis (the reference's last "
           "epoch): the same picture means the same features", 4.2 * len(runs))
    return fig


def _divergence_table(named: dict[str, dict]) -> list[dict]:
    rows = []
    for metric, data in named.items():
        for pair, (names, epochs, mat) in data.items():
            m = np.where(np.isfinite(mat), mat, -np.inf)
            order = np.argsort(m, axis=None)[::-1][:5]
            start = None
            for j, e in enumerate(epochs):
                first = first_divergence(names, mat[:, j], DIVERGENCE_THRESHOLD)
                if first is not None:
                    start = f"{first} (epoch {e})"
                    break
            for flat in order:
                i, j = np.unravel_index(flat, mat.shape)
                if not np.isfinite(mat[i, j]):
                    continue
                rows.append({"metric": metric, "pair": pair,
                             "layer": str(names[i]), "epoch": int(epochs[j]),
                             "value": float(mat[i, j]),
                             "divergence_starts": start or "nowhere"})
    rows.sort(key=lambda r: -r["value"])
    return rows


@plain_text()
def compare_runs(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None
) -> Comparison:
    """Compares runs (the first is the reference) and writes the report.

    Args:
        run_dirs: two or more run directories.
        out: output folder. Defaults to ``compare-<date-time>`` beside the
            first run.

    Returns:
        A `Comparison`.
    """
    if len(run_dirs) < 2:
        raise RunDirError("kerasft compare needs at least two run directories.")
    runs = []
    for d in run_dirs:
        if not (Path(d) / "config.yaml").exists():
            raise RunDirError(
                f"expected a kerasft run directory (with config.yaml). "
                f"Received: {str(d)!r}"
            )
        runs.append(load_run(d))
    warnings = _check_comparable(runs)
    t0 = time.perf_counter()
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    else:
        # a folder of its own per invocation, even within one second
        out = unique_dir(Path(run_dirs[0]).parent,
                         "compare-" + time.strftime("%Y%m%d-%H%M%S"))

    hist = _per_layer(runs, "weights",
                      lambda a, b, ka, kb: histogram_distances(a, b, ka, kb))
    ckpt = _checkpoint_diffs(runs)
    acts = _per_layer(runs, "activations", _rel_stat("l2"))
    grads = _per_layer(runs, "probe_gradients",
                       lambda a, b, ka, kb: np.abs(a["norms"] - b["norms"])
                       / np.maximum(a["norms"], 1e-12))
    figures = {
        "compare_curves": (_curves(runs), "Loss and accuracy overlaid"),
        "compare_hist_distance": (_heatmaps(
            hist, "Weight-histogram distance per layer (1-D Wasserstein on the "
            "two runs' common bins, in bin widths; 0 = identical)",
            "distance (bins)"), "Weight-histogram distance"),
        "compare_weight_diff": (_heatmaps(
            ckpt, "Relative difference of the weights, ||W_ref - W|| / "
            "||W_ref||, per kernel and checkpoint", "relative difference"),
            "Weight difference per layer"),
        "compare_probe": (_probe_lines(runs, tier_for(runs[0], runs[1])),
                          "Probe activations and probe gradients"),
        "compare_embeddings": (_embeddings(runs), "Embeddings side by side"),
    }
    paths = []
    for key, (fig, _) in figures.items():
        if fig is not None:
            fig.savefig(out / f"{key}.png", dpi=DPI)
            paths.append(out / f"{key}.png")
    table = _divergence_table({
        "weight histogram distance (bins)": hist,
        "weight rel. diff": ckpt,
        "probe activation rel. diff": acts,
        "probe gradient norm rel. diff": grads,
    })
    checks = {f"{_label(runs[0])} vs {_label(r)}":
              [c.__dict__ | {"ok": c.ok} for c in parity_checks(runs[0], r)]
              for r in runs[1:]}
    write_json(out / "divergences.json",
               {"divergences": table, "checks": checks, "warnings": warnings})
    page = _page(runs, figures, table, checks, warnings,
                 time.perf_counter() - t0)
    with atomic_write(out / "index.html") as f:
        f.write(page)
    return Comparison(out / "index.html", paths, warnings, table, checks)


def _page(runs, figures, table, checks, warnings, seconds) -> str:
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>kerasft compare</title><style>body{font:15px/1.45 sans-serif;"
        "max-width:1150px;margin:0 auto;padding:0 18px 60px}table{border-"
        "collapse:collapse;font-size:13px}td,th{padding:2px 10px;border-bottom:"
        "1px solid #ddd;text-align:left}.warn{background:#fff4e0;padding:6px "
        "10px;border-left:4px solid #e69500;margin:4px 0}.bad{color:#b00020;"
        "font-weight:600}img{max-width:100%}</style></head><body>",
        f"<h1>kerasft compare: {len(runs)} runs</h1>",
        f"<p>rendered in {seconds:.1f} s; reference: {e(_label(runs[0]))}</p>",
        "<table><tr><th>run</th><th>backend</th><th>framework</th>"
        "<th>test accuracy</th><th>initial weights</th></tr>",
    ]
    for r in runs:
        acc = (r.test or {}).get("test", {}).get("accuracy")
        parts.append(
            f"<tr><td>{e(r.path.name)}</td><td>{e(r.env.get('backend'))}</td>"
            f"<td>{e(r.env.get('framework'))}</td><td>"
            f"{'n/a' if acc is None else f'{acc:.2%}'}</td><td>"
            f"{e(str(r.env.get('initial_weights_sha256', ''))[:12])}</td></tr>")
    parts.append("</table>")
    parts += [f"<div class='warn'>{e(w)}</div>" for w in warnings]
    parts.append("<h2>Tolerance checks</h2>")
    for pair, rows in checks.items():
        if rows:
            bad = sum(not c["ok"] for c in rows)
            verdict = (f"<span class='bad'>FAILED: {bad} of {len(rows)} "
                       "checks</span>" if bad else
                       f"all {len(rows)} checks pass")
            parts.append(f"<p><b>{e(pair)}</b>: {verdict}; tier "
                         f"<b>{e(rows[0]['tier'])}</b>, because "
                         f"{e(rows[0]['reason'])}.</p>")
    parts.append("<table><tr><th>pair</th><th>check"
                 "</th><th>worst value</th><th>tolerance</th><th>where</th>"
                 "<th></th></tr>")
    for pair, rows in checks.items():
        for c in rows:
            cls = "" if c["ok"] else " class='bad'"
            parts.append(
                f"<tr><td>{e(pair)}</td><td>{e(c['name'])}</td><td>"
                f"{c['value']:.3g}</td><td>{c['tolerance']:g}</td><td>"
                f"{e(c['where'])}</td><td{cls}>{'ok' if c['ok'] else 'FAILS'}"
                "</td></tr>")
    parts.append("</table><h2>Largest divergences</h2><table><tr><th>metric"
                 "</th><th>pair</th><th>layer</th><th>epoch</th><th>value</th>"
                 "<th>divergence starts at</th></tr>")
    for row in table[:20]:
        parts.append(
            f"<tr><td>{e(row['metric'])}</td><td>{e(row['pair'])}</td><td>"
            f"{e(row['layer'])}</td><td>{row['epoch']}</td><td>"
            f"{row['value']:.3g}</td><td>{e(row['divergence_starts'])}</td></tr>")
    parts.append("</table>")
    for key, (fig, title) in figures.items():
        if fig is not None:
            parts.append(f"<h2>{e(title)}</h2><img src='{key}.png' "
                         f"alt='{e(title)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
