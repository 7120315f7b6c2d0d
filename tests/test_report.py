"""`kerasft report`: every figure, a valid page, a real browser, escaping."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import TINY, only_run_dir

FIGURES = (
    "curves", "structure", "grad_norms", "update_ratios",
    "weight_histograms", "layer_change", "batchnorm_drift",
    "activation_histograms", "dead_units", "embeddings", "confusion",
    "top_losses", "first_layer_filters", "feature_maps", "attention",
)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic",
]


def _check_png(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.load()
        w, h = img.size
        pixels = np.asarray(img.convert("L"))
    assert w >= 400 and h >= 200, (path, img.size)
    # non-trivial: not a blank canvas
    assert pixels.std() > 5, path


def test_train_renders_a_report_with_every_figure(recorded_run):
    report = recorded_run / "report"
    page = (report / "index.html").read_text()
    for key in FIGURES:
        png = report / f"{key}.png"
        assert png.exists(), key
        _check_png(png)
        assert f"src='{key}.png'" in page, key
    assert "figure module" not in page  # no figure module raised
    assert re.search(r"test accuracy \d+\.\d%", page)
    assert "http://" not in page and "https://" not in page  # offline page


def test_report_command_rerenders_in_place(cli, recorded_run):
    before = {p.name for p in (recorded_run / "report").iterdir()}
    r = cli(["report", recorded_run])
    assert r.code == 0, r
    assert f"report with {len(FIGURES)} figures" in r.out
    after = {p.name for p in (recorded_run / "report").iterdir()}
    assert after == before
    assert not [p for p in recorded_run.iterdir() if ".report." in p.name]


def test_report_on_a_missing_run_is_a_clear_error(cli, tmp_path):
    r = cli(["report", tmp_path / "nope"])
    assert r.code == 2 and "run directory" in r.err and "nope" in r.err


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def loaded_dom(page, profile):
    """`page` rendered by headless Chromium: (its DOM, the number of
    images the page counted, the number of them that did not load)."""
    dom = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         "--virtual-time-budget=10000", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    m = re.search(r'data-images="(\d+)" data-broken-images="(\d+)"', dom)
    assert m, dom[:500]
    return dom, int(m.group(1)), int(m.group(2))


def test_report_loads_every_image_in_headless_chromium(recorded_run, tmp_path):
    exe = _chromium()
    page = recorded_run / "report" / "index.html"
    url = page.resolve().as_uri()
    _, images, broken = loaded_dom(page, tmp_path / "u1")
    assert images == len(FIGURES) and broken == 0
    shot = tmp_path / "page.png"
    subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'u2'}",
         f"--screenshot={shot}", "--window-size=1200,3000", url],
        capture_output=True, timeout=120,
    )
    _check_png(shot)


def test_names_from_folders_and_configs_are_escaped(cli, tmp_path):
    """A class folder and a run name that are HTML/JS must stay text."""
    from PIL import Image

    rng = np.random.default_rng(0)
    classes = ["<img src=x onerror=alert(1)>", "<script>alert(1)", "plain"]
    for name in classes:
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
                tmp_path / "imgs" / name / f"{i}.png")
    r = cli(["train", "-c", "quickstart", "--epochs", "1", *TINY,
             "--set", "data.source=folder",
             "--set", f"data.path={tmp_path / 'imgs'}",
             # the page's text is the target; the recorders add no names
             "--set", "record.enabled=false",
             "--name", "<script>alert(1)</script>", "--out", tmp_path / "runs"])
    assert r.code == 0, r
    run = only_run_dir(tmp_path / "runs")
    page = (run / "report" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page
