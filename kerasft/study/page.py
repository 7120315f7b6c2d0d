"""The study's page: a table over plan x learning rate, the comparison's
figures and a verdict, every number read from the run directories.

The table's numbers per run come from `kerasft.compare.summary.summarize`
and the figures from `kerasft.compare.compare_runs`: the study adds only
the mean and spread over seeds and the sentences that read them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasft.render.html import _CSS, _SCRIPT, _e
from kerasft.rundir import atomic_write, write_json

log = logging.getLogger(__name__)

# The page's table and verdict as data, beside it.
RESULTS_FILE = "results.json"

# (summary key, column title, kind): kind says how a value is shown.
COLUMNS = (
    ("trainable_params", "trainable parameters", "count"),
    ("wall_seconds", "wall time", "seconds"),
    ("images_per_second", "img/s", "rate"),
    ("best_val_accuracy", "best val accuracy", "pct"),
    ("test_accuracy", "test accuracy", "pct"),
    ("train_inference_accuracy", "train accuracy (inference mode)", "pct"),
    ("knn_accuracy", "k-NN accuracy (embeddings)", "pct"),
)
# The views of `compare_runs` the page shows, in this order (the rest are
# on the comparison's own page, linked).
STUDY_VIEWS = ("curves", "layer_change", "stage_change", "knn", "embeddings",
               "metrics")
# Kept in the rows but not shown: the verdict's time ratio falls back on
# the seconds in training steps when a resumed run has no wall time.
HIDDEN = (("train_seconds", "seconds"),)


@dataclass
class Page:
    """What `write_page` made."""

    index: Path
    rows: list[dict]
    verdict: list[str]
    figures: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _stats(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None: no value / one value)."""
    vals = [float(v) for v in values
            if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    return mean, (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def table_rows(study, state: dict, summaries: list[dict | None]) -> list[dict]:
    """One row per (plan, learning rate), in the order of ``--plans``.

    Args:
        study: the `kerasft.study.runner.StudyPlan`.
        state: ``study.json``'s contents.
        summaries: per variant, `summarize` of its run (None: it did not
            complete).

    Returns:
        Dicts with ``plan``, ``lr``, ``seeds`` (of the completed runs),
        ``failed`` (labels), and per `COLUMNS` key its mean, ``<key>_std``
        (None with one seed) and ``<key>_values`` (per seed).
    """
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(study.variants):
        groups.setdefault((v.plan, v.lr or study.lr_shown), []).append(i)
    rows = []
    for (plan, lr), members in groups.items():
        done = [i for i in members if summaries[i] is not None]
        row = {
            "plan": plan,
            "lr": lr,
            "seeds": [study.variants[i].seed for i in done],
            "failed": [state["variants"][i]["label"] for i in members
                       if summaries[i] is None],
            "run_dirs": [state["variants"][i]["run_dir"] for i in done],
        }
        for key, *_ in (*COLUMNS, *HIDDEN):
            values = [summaries[i].get(key) for i in done]
            row[key], row[f"{key}_std"] = _stats(values)
            row[f"{key}_values"] = values
        rows.append(row)
    return rows


def _show(value, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "seconds":
        return f"{value:.1f} s"
    return f"{value:.3g}"


def _cell(row: dict, key: str, kind: str) -> str:
    text = _show(row[key], kind)
    std = row[f"{key}_std"]
    if std is not None:
        text += " ± " + (f"{100 * std:.1f}" if kind == "pct"
                         else _show(std, kind).replace(" s", "") if kind
                         == "seconds" else _show(std, kind))
    return text


def _best_per_plan(rows: list[dict]) -> tuple[dict, str]:
    """Each plan's row with the best mean validation accuracy (its only row
    with one rate), and how it was chosen."""
    best: dict[str, dict] = {}
    for row in rows:
        have = best.get(row["plan"])
        if have is None or (row["best_val_accuracy"] or -1) > (
                have["best_val_accuracy"] or -1):
            best[row["plan"]] = row
    several = len(rows) > len(best)
    how = ("each plan at the learning rate with the best mean validation "
           "accuracy (chosen on validation, not test)" if several else "")
    return best, how


def verdict(rows: list[dict]) -> list[str]:
    """Plain sentences with the numbers, from the table alone.

    Each plan is set against the linear probe (``head``; the first plan
    when there is none) on test accuracy and wall time; with a ``scratch``
    row, the best transferred plan is also set against it (the gain from
    transfer). A difference is
    called one only when it exceeds the seed spread (the two rows' sample
    standard deviations added); with one seed the sentence says so.
    """
    from kerasft.study.runner import PLAN_NAMES

    best, how = _best_per_plan(rows)
    if not best:
        return ["No variant completed: there is nothing to compare."]
    lines = [f"Compared: {how}." if how else ""]
    ref_plan = "head" if "head" in best else next(iter(best))
    ref = best[ref_plan]
    ref_name = PLAN_NAMES[ref_plan]
    several_lrs = len(rows) > len(best)

    def name(row):
        text = PLAN_NAMES[row["plan"]]
        return f"{text} (lr={row['lr']})" if several_lrs else text

    def versus(row, other, other_name):
        """One sentence: `row` against `other` on test accuracy and time."""
        if row["test_accuracy"] is None or other["test_accuracy"] is None:
            missing = name(row) if row["test_accuracy"] is None else name(other)
            return (f"{name(row)}: no test accuracy for {missing} "
                    "(no completed run).")
        diff = 100 * (row["test_accuracy"] - other["test_accuracy"])
        text = (f"{name(row)}: {diff:+.1f} points test accuracy over "
                f"{other_name}"
                + (f" (lr={other['lr']})" if several_lrs else ""))
        if row["wall_seconds"] and other["wall_seconds"]:
            text += (f" at {row['wall_seconds'] / other['wall_seconds']:.1f}x"
                     " the time")
        elif row["train_seconds"] and other["train_seconds"]:
            text += (f" at {row['train_seconds'] / other['train_seconds']:.1f}x "
                     "the time in training steps (a resumed run has no "
                     "wall time)")
        n = min(len(row["seeds"]), len(other["seeds"]))
        if n < 2:
            text += ("; one seed, so the difference may be seed noise "
                     "(--seeds 0,1,2 measures the spread)")
        else:
            spread = 100 * ((row["test_accuracy_std"] or 0)
                            + (other["test_accuracy_std"] or 0))
            if abs(diff) > spread:
                text += (f"; larger than the seed spread (±{spread:.1f} "
                         f"points over {n} seeds): a real difference")
            else:
                text += (f"; within the seed spread (±{spread:.1f} points "
                         f"over {n} seeds): not a clear difference")
        return text + "."

    for plan, row in best.items():
        if plan != ref_plan:
            lines.append(versus(row, ref, f"the {ref_name}"))
    # The gain from transfer: the best transferred plan against the
    # baseline that starts from random weights on the same labels.
    transferred = [r for p, r in best.items()
                   if p != "scratch" and r["test_accuracy"] is not None]
    if "scratch" in best and transferred and ref_plan != "scratch":
        top = max(transferred, key=lambda r: r["test_accuracy"])
        lines.append("Gain from transfer: " + versus(
            top, best["scratch"], "training from scratch on the same labels"))
    scored = [r for r in rows if r["test_accuracy"] is not None]
    if len(scored) > 1:
        top = max(scored, key=lambda r: r["test_accuracy"])
        if all(r["test_accuracy"] == top["test_accuracy"] for r in scored):
            lines.append(f"Every row has the same mean test accuracy, "
                         f"{100 * top['test_accuracy']:.1f}%.")
            return [line for line in lines if line]
        lines.append(
            f"Highest mean test accuracy: {PLAN_NAMES[top['plan']]} "
            f"lr={top['lr']}, {100 * top['test_accuracy']:.1f}%"
            + (f" ± {100 * top['test_accuracy_std']:.1f}"
               if top["test_accuracy_std"] is not None else "")
            + f" over {len(top['seeds'])} seed(s).")
    return [line for line in lines if line]


def _summaries(study, state: dict) -> list[dict | None]:
    from kerasft.compare.summary import summarize
    from kerasft.record.store import load_run

    out = []
    for entry in state["variants"]:
        if entry["state"] != "completed":
            out.append(None)
            continue
        out.append(summarize(load_run(study.out / entry["run_dir"])))
    return out


def _compare(study, state: dict):
    """`compare_runs` over the completed variants, into ``<out>/compare``;
    (comparison or None, warnings)."""
    from kerasft.compare import compare_runs
    from kerasft.errors import KerasftError

    done = [e for e in state["variants"] if e["state"] == "completed"]
    if len(done) < 2:
        return None, [f"{len(done)} completed variant(s): no comparison "
                      "figures (they need two)"]
    try:
        comparison = compare_runs(
            [study.out / e["run_dir"] for e in done], study.out / "compare",
            labels=[e["label"] for e in done])
    except KerasftError as e:
        # the table and verdict stand without the figures; the page says why
        log.warning("study: compare_runs refused the runs: %s", e)
        return None, [f"no comparison figures: {e}"]
    return comparison, list(comparison.warnings)


def _figures_html(comparison) -> str:
    """The comparison's study views (`STUDY_VIEWS`) as figures, the ones it
    skipped with its reason, and a link to the rest."""
    if comparison is None:
        return "<p>No comparison figures (see the warnings above).</p>"
    parts, skipped = [], []
    for key in STUDY_VIEWS:
        view = comparison.views.get(key)
        if view is None:
            continue
        if not view.present or view.figure is None:
            skipped.append(view)
            continue
        note = f" ({view.reason})" if view.reason else ""
        parts.append(
            f"<figure id='fig-{_e(key)}'><img src='compare/"
            f"{_e(Path(view.figure).name)}' alt='{_e(view.title)}' "
            f"loading='eager'><figcaption><b>{_e(view.title)}.</b>"
            f"{_e(note)}</figcaption></figure>")
    if skipped:
        parts.append("<p>Views the comparison could not draw:</p><ul>" + "".join(
            f"<li>{_e(v.title)}: {_e(v.reason or '')}</li>" for v in skipped)
            + "</ul>")
    others = [v.title for k, v in comparison.views.items()
              if k not in STUDY_VIEWS and v.present]
    parts.append("<p>The whole comparison"
                 + (f" (also: {_e(', '.join(others))})" if others else "")
                 + ": <a href='compare/index.html'>compare/index.html</a>.</p>")
    return "".join(parts)


def _run_link(out: Path, run_dir: str | None) -> str:
    """A variant's run: a link to its report, else to its folder."""
    if not run_dir:
        return "not started"
    report = f"{run_dir}/report/index.html"
    target = report if (out / report).is_file() else run_dir
    return f"<a href='{_e(target)}'>{_e(run_dir)}</a>"


def _table_html(rows: list[dict]) -> str:
    head = "".join(f"<th>{_e(t)}</th>" for t in
                   ("plan", "LR", "seeds", *(c[1] for c in COLUMNS)))
    body = []
    for row in rows:
        seeds = ", ".join(map(str, row["seeds"])) or "none completed"
        if row["failed"]:
            seeds += f" ({len(row['failed'])} failed)"
        cells = [row["plan"], row["lr"], seeds,
                 *(_cell(row, key, kind) for key, _, kind in COLUMNS)]
        body.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells)
                    + "</tr>")
    return (f"<table id='study-table' class='grid'><tr>{head}</tr>"
            + "".join(body) + "</table>")


_TABLE_CSS = """
table.grid{border-collapse:collapse;font-size:13.5px;margin:8px 0}
table.grid th,table.grid td{border:1px solid #d8dde3;padding:4px 8px;
text-align:right}table.grid th{background:#f5f7f9}
table.grid td:first-child,table.grid td:nth-child(2){text-align:left}
"""


def write_page(study, state: dict) -> Page:
    """Writes ``<out>/index.html`` (and ``<out>/compare/``) from the runs.

    Args:
        study: the `kerasft.study.runner.StudyPlan`.
        state: ``study.json``'s contents.

    Returns:
        A `Page`.
    """
    summaries = _summaries(study, state)
    rows = table_rows(study, state, summaries)
    lines = verdict(rows)
    comparison, warnings = _compare(study, state)
    failed = [e for e in state["variants"] if e["state"] != "completed"]
    for e in failed:
        warnings.append(f"{e['label']} {e['state']}"
                        + (f": {e['error']}" if e.get("error") else "")
                        + " (run the same command again to continue it)")
    flags = state["flags"]
    seeds = sorted({v.seed for v in study.variants})
    start = ("every variant starts from " + Path(study.init_from).name
             if study.init_from else
             "each seed's first variant's initial weights are the start of "
             "that seed's other variants (as --init-from makes them)")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>kerasft study — {_e(study.base.name)}</title>",
        f"<style>{_CSS}{_TABLE_CSS}</style><script>{_SCRIPT}</script>"
        "</head><body>",
        f"<h1>kerasft study: {_e(study.base.name)}</h1>",
        f"<p class='sub'>{len(study.variants)} variants (plans "
        f"{_e(', '.join(flags['plans']))}; learning rates "
        f"{_e(', '.join(flags['lrs'] or [study.lr_shown]))}; seeds "
        f"{_e(', '.join(map(str, seeds)))}) on the {_e(flags['backend'])} "
        f"backend, config {_e(Path(flags['config']).name)}</p>",
        "<div id='broken' class='warn'></div>",
        *(f"<div class='warn'>{_e(w)}</div>" for w in warnings),
        "<h2 id='verdict'>Verdict</h2><ul id='verdict-lines'>",
        *(f"<li>{_e(line)}</li>" for line in lines),
        "</ul>",
        "<h2 id='table'>Results</h2>",
        _table_html(rows),
        "<p class='sub'>Mean over the seeds that completed; ± is the "
        "sample standard deviation over seeds (shown with more than one). "
        f"Same start: {_e(start)}. The seed also sets the validation split, "
        "the image caps, the data order and the probe set, so the spread "
        "over seeds covers all of them. Every number is read from the run "
        "directories under runs/.</p>",
        "<h2 id='figures'>Side by side</h2>",
        _figures_html(comparison),
        "<h2 id='runs'>Runs</h2><table class='kv'>",
        *(f"<tr><td>{_e(e['label'])}</td><td>{_e(e['state'])}</td><td>"
          + _run_link(study.out, e["run_dir"]) + "</td></tr>"
          for e in state["variants"]),
        "</table></body></html>",
    ]
    write_json(study.out / RESULTS_FILE, {"rows": rows, "verdict": lines,
                                          "warnings": warnings})
    index = study.out / "index.html"
    with atomic_write(index) as f:
        f.write("\n".join(parts))
    figures = list(comparison.figures) if comparison is not None else []
    return Page(index, rows, lines, figures, warnings)
