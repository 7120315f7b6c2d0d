"""Cross-backend parity: one tiny config on torch, tensorflow and jax.

The torch run saves its initial weights; the tensorflow and jax runs start
from them (--init-from). Every tolerance in kerasft.compare.tolerances must
hold for both pairs. Runs in its own tox env (`tox -e parity`), each backend
in a subprocess of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, only_run_dir

pytestmark = pytest.mark.parity

ARGS = [
    "-c", "quickstart", "--epochs", "1", "--steps-per-epoch", "4",
    "--batch-size", "16", "--max-train-images", "128",
    "--max-test-images", "32", "--optimizer", "sgd", "--plan", "full",
    "--set", "plan.batchnorm=inference", "--lr", "0.001",
    "--set", "optimizer.momentum=0.0", "--set", "optimizer.schedule=constant",
    # Bounded steps keep the run out of the chaotic regime (see
    # kerasft/compare/tolerances.py): without clipping, a 1e-6 change of the
    # start moved the validation loss by 4.1e-2 after 4 steps; with it, 2.1e-7.
    "--set", "optimizer.clipnorm=1.0",
    "--set", "record.every_steps=1", "--set", "record.embedding_size=32",
    "--set", "record.probe_size=16", "--set", "train.verbose=0",
    "--deterministic", "--no-report",
]
BACKENDS = ("torch", "tensorflow", "jax")


def _train(backend, out, extra=()):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run(
        [sys.executable, "-m", "kerasft", "train", *ARGS, *extra,
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return only_run_dir(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("parity")
    out = {"torch": _train("torch", base / "torch")}
    for b in BACKENDS[1:]:
        out[b] = _train(b, base / b, ["--init-from", str(out["torch"])])
    return out


def test_all_three_start_from_the_same_weights(runs):
    from kerasft import load_run

    prints = {b: load_run(p).env["initial_weights_sha256"]
              for b, p in runs.items()}
    assert len(set(prints.values())) == 1, prints
    assert {load_run(p).env["backend"] for p in runs.values()} == set(BACKENDS)


@pytest.mark.parametrize("other", BACKENDS[1:])
def test_every_tolerance_holds(runs, other):
    from kerasft import load_run
    from kerasft.compare import parity_checks

    checks = parity_checks(load_run(runs["torch"]), load_run(runs[other]))
    names = {c.name for c in checks}
    assert "epoch-0 weight histogram count difference" in names
    assert "epoch-0 probe activation l2 rel. diff" in names
    assert "epoch-0 probe gradient norm rel. diff" in names
    assert "epoch-1 loss rel. diff" in names
    assert "epoch-1 weight histogram distance (bins)" in names
    failures = [str(c) for c in checks if not c.ok]
    assert not failures, "\n".join(failures)


def test_compare_writes_figures_table_and_checks(runs, tmp_path):
    from conftest import run_cli

    out = tmp_path / "cmp"
    r = run_cli(["compare", *(runs[b] for b in BACKENDS), "--out", out])
    assert r.code == 0, r
    assert r.out.count("10/10 tolerance checks pass") == 2
    for key in ("compare_curves", "compare_hist_distance",
                "compare_weight_diff", "compare_probe", "compare_embeddings"):
        assert (out / f"{key}.png").stat().st_size > 10_000, key
    page = (out / "index.html").read_text()
    assert "Largest divergences" in page and "Tolerance checks" in page
    assert "FAILS" not in page
    import json

    table = json.loads((out / "divergences.json").read_text())
    assert table["divergences"] and table["checks"]


def test_compare_skips_what_another_model_or_start_cannot_share(
    runs, tmp_path
):
    from conftest import run_cli

    other = tmp_path / "other-run"
    shutil.copytree(runs["jax"], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["model"]["arch"] = "resnet101"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli(["compare", runs["torch"], other, "--out", tmp_path / "c1"])
    assert r.code == 0, r
    assert "different architectures (model.arch resnet50 vs resnet101" in r.out
    assert (tmp_path / "c1" / "compare_curves.png").is_file()

    moved = tmp_path / "moved-start"
    shutil.copytree(runs["jax"], moved)
    env = (moved / "env.json").read_text().replace(
        '"initial_weights_sha256": "', '"initial_weights_sha256": "0')
    (moved / "env.json").write_text(env)
    r = run_cli(["compare", runs["torch"], moved, "--out", tmp_path / "c2"])
    assert r.code == 0 and "started from different weights" in r.out, r
    assert "skipped Weight-histogram distance" in r.out
