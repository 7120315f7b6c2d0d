"""Activation, embedding and filter figures, from small synthetic stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasft.record import store
from kerasft.record.store import load_run
from kerasft.render import activations, embeddings, filters
from kerasft.render.base import RenderOptions

BLOCKS = ["conv1_relu", "conv2_block1_out", "conv3_block1_out", "head_pool"]


def _run_dir(tmp_path, classes=3):
    (tmp_path / "data.json").write_text(json.dumps(
        {"class_names": [f"class{i}" for i in range(classes)]}))
    return tmp_path / "record"


def _write_activations(record, epochs=3, scale_last=1.0, dead_last=0.0):
    """ReLU-like outputs with more exact zeros every epoch."""
    rng = np.random.default_rng(0)
    first = [np.maximum(rng.normal(size=1000), 0) for _ in BLOCKS]
    edges = np.stack([store.fixed_edges(v) for v in first])
    store.write_npz(record / "activations" / "bins.npz",
                    names=np.array(BLOCKS), edges=edges)
    for e in range(epochs):
        counts, stats = [], []
        for i in range(len(BLOCKS)):
            v = np.maximum(rng.normal(size=1000), 0)
            v[: 100 * e] = 0.0
            if e == epochs - 1:
                v = v * scale_last
            counts.append(store.histogram(v, edges[i]))
            stats.append(store.summary_stats(v))
        dead = np.full(len(BLOCKS), dead_last if e == epochs - 1 else 0.0)
        store.write_npz(record / "activations" / store.record_name(e),
                        names=np.array(BLOCKS), counts=np.stack(counts),
                        stats=np.stack(stats), dead_fraction=dead)


def _features(epochs=3, per_class=12, dim=6, classes=3):
    """Features whose classes separate more every epoch."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(size=(classes, dim)) * 3
    return [
        (rng.normal(size=(len(labels), dim)) + centres[labels] * e
         ).astype(np.float32)
        for e in range(epochs)
    ], labels


def _write_embeddings(record, epochs=3):
    feats, labels = _features(epochs)
    for e, f in enumerate(feats):
        store.write_npz(record / "embeddings" / store.record_name(e),
                        features=f, labels=labels.astype(np.int64))
    return feats, labels


def _write_feature_maps(record, epochs=2):
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 3, 10)).astype(np.float32)
    for e in range(epochs):
        store.write_npz(
            record / "feature_maps" / store.record_name(e),
            filters=kernel + 0.1 * e,
            image=rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8),
            layers=np.array(["conv1_relu", "conv5_block3_out"]),
            **{"maps/conv1_relu": rng.random((8, 8, 16)).astype(np.float16),
               "maps/conv5_block3_out": rng.random((1, 1, 4)).astype(
                   np.float16)},
        )
    return kernel


# ------------------------------------------------------------- missing data


def test_missing_kinds_give_no_figures(tmp_path):
    _run_dir(tmp_path)
    run = load_run(tmp_path)
    for module in (activations, embeddings, filters):
        assert module.render(run, RenderOptions()) == []


def test_empty_kind_directories_give_no_figures(tmp_path):
    record = _run_dir(tmp_path)
    for kind in ("activations", "embeddings", "feature_maps"):
        (record / kind).mkdir(parents=True)
    run = load_run(tmp_path)
    for module in (activations, embeddings, filters):
        assert module.render(run, RenderOptions()) == []


# -------------------------------------------------------------- activations


def test_activation_figures_keys_and_zero_share(tmp_path):
    _write_activations(_run_dir(tmp_path))
    run = load_run(tmp_path)
    results = activations.render(run, RenderOptions())
    assert [r.key for r in results] == ["activation_histograms", "dead_units"]
    assert {r.section for r in results} == {"activations"}
    assert results[0].notes == [] and results[1].notes == []
    series = activations.histogram_series(run, BLOCKS)
    s = series["conv1_relu"]
    assert s["epochs"] == [0, 1, 2]
    assert s["counts"].shape == (store.NUM_BINS, 3)
    # about half of a ReLU'd normal is exactly 0; more as values are zeroed
    assert 0.45 < s["zero_share"][0] < 0.6
    assert s["zero_share"][2] - s["zero_share"][0] > 0.05
    assert np.all(s["outside_share"] == 0)


def test_exploding_activations_are_noted(tmp_path):
    _write_activations(_run_dir(tmp_path), scale_last=50.0)
    from kerasft.render.diagnose import diagnose

    (f,) = [f for f in diagnose(load_run(tmp_path))
            if f.id == "activations_growing"]  # one finding for all blocks
    assert "conv1_relu" in f.message and "1 more" in f.message


def test_dead_units_note_and_table(tmp_path):
    _write_activations(_run_dir(tmp_path), dead_last=0.75)
    run = load_run(tmp_path)
    names, epochs, table = activations.dead_fractions(run)
    assert names == BLOCKS and epochs == [0, 1, 2]
    np.testing.assert_allclose(table[-1], 0.75)
    from kerasft.render.diagnose import diagnose

    (f,) = [f for f in diagnose(run) if f.id == "dead_layer"]
    assert f.evidence[0].value == pytest.approx(0.75)


def test_activations_one_epoch_and_selection(tmp_path):
    _write_activations(_run_dir(tmp_path), epochs=1)
    results = activations.render(load_run(tmp_path),
                                 RenderOptions(max_layers=2))
    assert [r.key for r in results] == ["activation_histograms", "dead_units"]
    titles = [a.get_title() for a in results[0].figure.axes if a.get_title()]
    # first and last block kept by the selection
    assert len(titles) == 2
    assert titles[0].startswith("conv1_relu")
    assert titles[1].startswith("head_pool")


def test_zero_bin():
    assert activations.zero_bin(np.array([-1.0, 0.5, 2.0])) == 0
    assert activations.zero_bin(np.array([1.0, 2.0])) is None


# --------------------------------------------------------------- embeddings


def test_fixed_basis_is_top2_pca():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    x = x @ np.linalg.qr(rng.normal(size=(5, 5)))[0]
    mean, comps = embeddings.fixed_basis(x)
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-10)
    evals, evecs = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    top = evecs[:, ::-1][:, :2].T
    np.testing.assert_allclose(np.abs(comps @ top.T), np.eye(2), atol=1e-8)
    xy = embeddings.project(x, mean, comps)
    np.testing.assert_allclose(xy.var(axis=0, ddof=1), evals[::-1][:2],
                               rtol=1e-8)
    # sign fixed: the largest entry of each direction is positive
    for row in comps:
        assert row[np.argmax(np.abs(row))] > 0
    # deterministic under a reordering of the samples
    _, again = embeddings.fixed_basis(x[::-1])
    np.testing.assert_allclose(again, comps, atol=1e-10)


def test_fixed_basis_degenerate_inputs():
    mean, comps = embeddings.fixed_basis(np.ones((4, 3)))
    assert comps.shape == (2, 3) and np.all(comps == 0)
    mean, comps = embeddings.fixed_basis(np.arange(5.0)[:, None])
    assert comps.shape == (2, 1)
    assert embeddings.project(np.zeros((2, 1)), mean, comps).shape == (2, 2)


def test_every_epoch_is_projected_with_the_last_epochs_basis(tmp_path):
    feats, labels = _write_embeddings(_run_dir(tmp_path))
    run = load_run(tmp_path)
    data = embeddings.embedding_panels(
        run, RenderOptions(embeddings_every_epoch=True))
    assert data["basis_epoch"] == 2
    mean, comps = embeddings.fixed_basis(feats[-1])
    assert [p["epoch"] for p in data["panels"]] == [0, 1, 2]
    for p, f in zip(data["panels"], feats):
        np.testing.assert_allclose(p["xy"], embeddings.project(f, mean, comps),
                                   rtol=1e-6, atol=1e-6)
    # epoch 0 is not re-fitted: its own PCA would give other coordinates
    own = embeddings.project(feats[0], *embeddings.fixed_basis(feats[0]))
    assert not np.allclose(data["panels"][0]["xy"], own, atol=1e-3)
    # the separation score rises as the classes pull apart
    assert data["panels"][-1]["knn_full"] > data["panels"][0]["knn_full"]


def test_embeddings_figure(tmp_path):
    _write_embeddings(_run_dir(tmp_path))
    run = load_run(tmp_path)
    (result,) = embeddings.render(run, RenderOptions())
    assert result.key == "embeddings" and result.section == "embeddings"
    axes = [a for a in result.figure.axes if a.get_visible()]
    assert len(axes) == 2  # start vs end
    assert axes[0].get_xlim() == axes[1].get_xlim()
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert "5-NN accuracy" in axes[1].get_title()
    legend = result.figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "class0", "class1", "class2"]
    (every,) = embeddings.render(run, RenderOptions(embeddings_every_epoch=True))
    assert len([a for a in every.figure.axes if a.get_visible()]) == 3


def test_knn_accuracy():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 10)
    x = rng.normal(size=(40, 3)) * 0.1 + np.eye(4, 3)[labels] * 10
    assert embeddings.knn_accuracy(x, labels) == 1.0
    assert embeddings.knn_accuracy(rng.normal(size=(400, 3)),
                                   rng.integers(0, 4, 400)) < 0.45
    assert np.isnan(embeddings.knn_accuracy(np.zeros((1, 2)), [0]))


def test_single_epoch_embeddings_and_nan_features(tmp_path):
    record = _run_dir(tmp_path)
    feats, labels = _features(epochs=1)
    store.write_npz(record / "embeddings" / store.record_name(0),
                    features=feats[0], labels=labels)
    (result,) = embeddings.render(load_run(tmp_path), RenderOptions())
    assert len([a for a in result.figure.axes if a.get_visible()]) == 1
    bad = feats[0].copy()
    bad[0, 0] = np.nan
    store.write_npz(record / "embeddings" / store.record_name(1),
                    features=bad, labels=labels)
    data = embeddings.embedding_panels(load_run(tmp_path), RenderOptions())
    assert data["basis_epoch"] == 0
    assert data["panels"][-1]["xy"] is None
    assert len(embeddings.render(load_run(tmp_path), RenderOptions())) == 1


# ------------------------------------------------------------------ filters


def test_filter_figures(tmp_path):
    _write_feature_maps(_run_dir(tmp_path))
    results = filters.render(load_run(tmp_path), RenderOptions())
    assert [r.key for r in results] == ["first_layer_filters", "feature_maps"]
    assert {r.section for r in results} == {"filters"}
    # first, last and their difference
    assert len(results[0].figure.axes) == 3
    labels = [a.get_ylabel() for a in results[1].figure.axes if a.get_ylabel()]
    assert labels[0].startswith("conv1_relu\n8x8")
    assert labels[1].startswith("conv5_block3_out\n1x1")


def test_filters_one_epoch(tmp_path):
    _write_feature_maps(_run_dir(tmp_path), epochs=1)
    results = filters.render(load_run(tmp_path), RenderOptions())
    assert [r.key for r in results] == ["first_layer_filters", "feature_maps"]
    assert len(results[0].figure.axes) == 1


def test_normalise_filters_and_mosaic():
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(5, 5, 3, 7))
    kernel[..., 3] = 2.0  # a constant filter
    tiles = filters.normalise_filters(kernel)
    assert tiles.shape == (7, 5, 5, 3)
    assert tiles.min() >= 0 and tiles.max() <= 1
    for i in (0, 1, 2):
        assert tiles[i].min() == 0 and tiles[i].max() == 1
    assert np.all(tiles[3] == 0.5)
    grey = filters.normalise_filters(rng.normal(size=(3, 3, 1, 2)))
    assert grey.shape == (2, 3, 3, 3)
    assert filters.mosaic(tiles, cols=4).shape == (2 * 6 + 1, 4 * 6 + 1, 3)
    with pytest.raises(ValueError, match="Received shape"):
        filters.normalise_filters(np.zeros((3, 3)))


def test_relative_change():
    a = np.ones((2, 2))
    assert filters.relative_change(a, a) == 0.0
    assert filters.relative_change(a, 2 * a) == pytest.approx(1.0)
