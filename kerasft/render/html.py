"""The report's one static HTML page: inline CSS, relative image links.

Every piece of text that comes from a config, the data or the environment
(run names, class names from folder names, paths, error messages) goes
through `html.escape`; the page loads nothing from the network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from kerasft.render.base import SECTIONS, FigureResult

_CSS = """
body{font:15px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;
margin:0 auto;max-width:1100px;padding:0 18px 60px;color:#1d232b}
h1{font-size:24px;margin:22px 0 4px}h2{font-size:19px;margin:34px 0 8px;
border-bottom:1px solid #d8dde3;padding-bottom:4px}
.sub{color:#5b6570;margin:0 0 14px}
table.kv{border-collapse:collapse;font-size:14px}
table.kv td{padding:3px 14px 3px 0;vertical-align:top}
table.kv td:first-child{color:#5b6570;white-space:nowrap}
.big{font-size:22px;font-weight:600}
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:8px 12px;
margin:6px 0}
.err{background:#fdecea;border-left:4px solid #c62828;padding:10px 14px;
margin:10px 0;font-size:15px}
.ok{background:#eaf6ec;border-left:4px solid #3a9a4a;padding:8px 12px}
.info{background:#eef3f9;border-left:4px solid #6b8bb5;padding:8px 12px;
margin:6px 0}
.finding ul{margin:4px 0 2px 0;padding-left:20px;font-size:13.5px;
color:#3c4650}.finding .act{margin-top:3px}
.tag{font:600 12px monospace;color:#5b6570;margin-right:6px}
figure{margin:14px 0 26px}figure img{max-width:100%;border:1px solid #e3e6ea}
figcaption{color:#3c4650;font-size:14px;margin-top:4px}
nav a{margin-right:12px;font-size:14px}
pre{background:#f5f7f9;padding:10px;overflow:auto;font-size:12.5px}
#broken{display:none}
"""

# Marks the page with how many figures loaded, so a broken image shows up as
# a visible warning (and a headless browser can read the count).
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {
    return !i.complete || i.naturalWidth === 0; });
  document.documentElement.setAttribute('data-images', imgs.length);
  document.documentElement.setAttribute('data-broken-images', broken.length);
  if (broken.length) {
    var b = document.getElementById('broken');
    b.textContent = broken.length + ' figure(s) failed to load: ' +
      broken.map(function (i) { return i.getAttribute('src'); }).join(', ');
    b.style.display = 'block';
  }
});
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, pct=False) -> str:
    if value is None or value == "":
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    return f"{v:.1%}" if pct else f"{v:.4g}"


def _error_box(status: dict) -> str:
    """The failed or interrupted run's error, above everything else."""
    state = status.get("state")
    if state not in ("failed", "interrupted"):
        return ""
    rows = ""
    fault = status.get("fault") or {}
    if fault:
        where = f"epoch {fault.get('epoch')}, " + (
            "validation " if fault.get("phase") == "validation" else "") + (
            f"batch {fault.get('batch')}")
        if fault.get("phase") == "training":
            where += f" (training step {fault.get('step')})"
        found = fault.get("found") or {}
        items = [
            ("where", where),
            ("non-finite", ", ".join(f"{k} {v}" for k, v in
                                     (fault.get("values") or {}).items())
             or "a gradient"),
            ("first layer (input to output)", fault.get("layer") or "not found"),
            ("learning rate at that step", _fmt(fault.get("learning_rate"))),
        ]
        if found.get("input"):
            items.append(("non-finite input entries", found["input"]))
        if fault.get("gradient_watch"):
            items.append(("first non-finite gradient", fault["gradient_watch"]))
        if fault.get("loss_scale") is not None:
            items.append(("loss scale (mixed_float16)",
                          _fmt(fault["loss_scale"])))
        rows = "<table class='kv'>" + "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in items
        ) + "</table>"
        rows += ("<p>Only complete epochs before the fault are recorded; "
                 "the figures below end there.</p>")
    error = status.get("error") or state
    return (f"<div class='err' id='run-error'><b>This run {_e(state)}.</b> "
            f"{_e(error)}{rows}</div>")


def _learning_rates(cfg: dict, phases) -> str:
    """The configured rate and, per phase, the rate it trained at."""
    opt = cfg.get("optimizer", {})
    per_phase = ", ".join(
        f"{p.get('name')} {_fmt(p['learning_rate'])}"
        + (" (LR range test)" if p.get("lr_find") else "")
        for p in phases or []
        if isinstance(p, dict) and p.get("learning_rate") is not None)
    text = f"{opt.get('learning_rate', '?')} ({opt.get('name', '?')})"
    return f"{text}; per phase: {per_phase}" if per_phase else text


def _findings_html(findings: list) -> str:
    """The diagnosis block: each finding with its evidence and action."""
    from kerasft.render.diagnose import RULES, problems

    css = {"error": "err", "warning": "warn", "info": "info"}
    out = []
    if not problems(findings):
        out.append(
            "<div class='ok' id='healthy'><b>Healthy:</b> no rule found a "
            f"problem in the recorded numbers ({len(RULES)} rules, see "
            "docs/diagnosis.md).</div>")
    for f in findings:
        evidence = "".join(f"<li>{_e(e.text())}</li>" for e in f.evidence)
        out.append(
            f"<div class='{css.get(f.severity, 'warn')} finding' "
            f"data-finding='{_e(f.id)}'><span class='tag'>{_e(f.severity)} "
            f"· {_e(f.id)}</span><b>{_e(f.message)}</b>"
            + (f"<ul>{evidence}</ul>" if evidence else "")
            + (f"<div class='act'>What to do: {_e(f.action)}</div>"
               if f.action else "") + "</div>")
    return "".join(out)


def build_html(run, figures: list[FigureResult], warnings: list[str],
               render_seconds: float, findings: list | None = None) -> str:
    """The page: the diagnosis first, a summary, then one section per
    `SECTIONS` entry."""
    cfg, env, test = run.config or {}, run.env or {}, run.test or {}
    data, status = run.data or {}, run.status or {}
    name = cfg.get("name", run.path.name)
    t = test.get("test", {})
    rows = [
        ("run directory", run.path.name),
        ("config", f"{name} — {cfg.get('description', '')}"),
        ("backend", f"{env.get('backend', '?')} (framework "
                    f"{env.get('framework', '?')}, Keras {env.get('keras', '?')}, "
                    f"Python {env.get('python', '?')})"),
        ("device", env.get("device", "?")),
        ("model", f"{cfg.get('model', {}).get('arch', '?')}, weights "
                  f"{cfg.get('model', {}).get('weights', '?')}, plan "
                  f"{cfg.get('plan', {}).get('kind', '?')}"),
        ("data", f"{data.get('description', '?')}; sizes "
                 f"{json.dumps(data.get('sizes', {}))}"),
        ("learning rate", _learning_rates(cfg, run.phases)),
        ("seed", env.get("seed", cfg.get("seed", "?"))),
        ("status", f"{status.get('state', '?')}, {status.get('epochs_done', '?')} "
                   f"epoch(s), {status.get('seconds', '?')} s"),
        ("started", env.get("started", "?")),
    ]
    inference = test.get("train_inference_mode", {})
    last = test.get("last_epoch", {})
    headline = (
        f"<p><span class='big'>test accuracy {_fmt(t.get('accuracy'), True)}"
        f"</span> &nbsp; test loss {_fmt(t.get('loss'))} on "
        f"{_e(test.get('test_images', '?'))} images &nbsp;·&nbsp; training "
        f"images: {_fmt(last.get('accuracy'), True)} in training mode, "
        f"{_fmt(inference.get('accuracy'), True)} in inference mode</p>"
    )
    error_html = _error_box(status)
    if error_html and not t:
        headline = ("<p><span class='big'>no test evaluation</span> "
                    f"(the run {_e(status.get('state'))})</p>")
    warn_html = "".join(f"<div class='warn'>{_e(w)}</div>" for w in warnings)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>kerasft report — {_e(name)} ({_e(env.get('backend', ''))})</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>kerasft report: {_e(name)}</h1>",
        f"<p class='sub'>{_e(run.path.name)} · rendered in "
        f"{render_seconds:.1f} s</p>",
        "<div id='broken' class='warn'></div>",
        error_html,
        "<h2 id='diagnosis'>Diagnosis</h2>",
        _findings_html(findings or []),
        warn_html and "<h2 id='warnings'>Other warnings</h2>" + warn_html,
        headline,
        "<table class='kv'>",
        *(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows),
        "</table>",
    ]
    by_section: dict[str, list[FigureResult]] = {}
    for f in figures:
        by_section.setdefault(f.section, []).append(f)
    nav = [f"<a href='#{k}'>{_e(title)}</a>" for k, title in SECTIONS
           if k in by_section]
    parts.append("<nav>" + "".join(nav) + "<a href='#config'>Config</a></nav>")
    for key, title in SECTIONS:
        if key not in by_section:
            continue
        parts.append(f"<h2 id='{key}'>{_e(title)}</h2>")
        for f in by_section[key]:
            parts.append(
                f"<figure id='fig-{_e(f.key)}'><img src='{_e(f.key)}.png' "
                f"alt='{_e(f.title)}' loading='eager'>"
                f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}"
                "</figcaption></figure>"
            )
    config_text = ""
    config_path = Path(run.path) / "config.yaml"
    if config_path.exists():
        config_text = config_path.read_text(encoding="utf-8")
    classes = data.get("class_names", [])
    parts += [
        "<h2 id='config'>Resolved config</h2>",
        f"<pre>{_e(config_text)}</pre>",
        f"<p>Classes ({len(classes)}): {_e(', '.join(map(str, classes)))}</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
