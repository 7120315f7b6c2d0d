"""Streaming input: memory flat in the set's size, the same batches for any
worker count and on every backend."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerasft.config import DataConfig
from kerasft.data import Batches, load_splits

from conftest import REPO

BACKENDS = ("torch", "tensorflow", "jax")


def _run_child(code: str, backend: str | None = None) -> dict:
    """Runs `code` in a fresh interpreter; it prints one JSON line last."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"),
    reason="peak-RSS reset needs Linux /proc",
)
def test_large_set_at_224px_streams_in_flat_memory(tmp_path):
    # 3,000 native 32 px images: 9 MB as stored, 450 MB if materialized at
    # 224 px (1.8 GB as float32). The child trains a trivial model on them
    # through the real loader (npz source, Batches, 2 worker threads) and
    # reports how far its peak RSS rose above the level after loading.
    rng = np.random.default_rng(0)
    n = 3000
    np.savez(tmp_path / "big.npz",
             x_train=rng.integers(0, 256, (n, 32, 32, 3), np.uint8),
             y_train=np.arange(n) % 10)
    out = _run_child(f"""
        import json, re
        import keras, numpy as np
        from kerasft.config import DataConfig
        from kerasft.data import Batches, load_splits

        def rss_mb(key):
            text = open("/proc/self/status").read()
            return int(re.search(key + r":\\s+(\\d+)", text).group(1)) / 1024

        cfg = DataConfig(source="numpy", path={str(tmp_path / "big.npz")!r},
                         image_size=224, validation_fraction=0)
        splits = load_splits(cfg, 0)
        train = Batches(splits.train, 16, 224, "resnet50", 0, shuffle=True,
                        max_steps=8, flip=True, crop_pad=4, workers=2)
        model = keras.Sequential([
            keras.Input((224, 224, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        # Warm up (build and compile the step) on a copy of a few images,
        # so nothing the real set caches counts as baseline.
        few = splits.train.subset(np.arange(16))
        model.fit(Batches(few, 16, 224, "resnet50", 0), verbose=0)
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak
        base = rss_mb("VmRSS")
        model.fit(train, verbose=0)
        print(json.dumps({{
            "train_images": len(splits.train),
            "native_shape": list(splits.train.images.images.shape),
            "base_mb": base, "peak_mb": rss_mb("VmHWM"),
        }}))
    """)
    assert out["native_shape"][1:] == [32, 32, 3]
    materialized_mb = out["train_images"] * 224 * 224 * 3 / 2**20
    assert materialized_mb > 300
    added = out["peak_mb"] - out["base_mb"]
    assert added < 150, (
        f"streaming 8 batches at 224 px added {added:.0f} MB of peak RSS "
        f"(materialized set: {materialized_mb:.0f} MB)")


# One fixed, cheap config: shuffled, flipped and cropped digits at 32 px,
# two epochs in one object, read through Keras's PyDataset machinery by
# predicting with an identity model (what `fit` would be fed, in order).
_BATCHES_CODE = """
    import hashlib, json
    import keras, numpy as np
    from kerasft.config import DataConfig
    from kerasft.data import Batches, load_splits

    def batches_seen(workers):
        cfg = DataConfig(source="builtin", name="digits", image_size=32,
                         max_train_images=200)
        split = load_splits(cfg, 5).train
        b = Batches(split, 16, 32, "resnet50", 5, shuffle=True, flip=True,
                    crop_pad=3, epochs=2, start_epoch=1, workers=workers,
                    max_queue_size=2)
        model = keras.Sequential([keras.Input((32, 32, 3)),
                                  keras.layers.Identity()])
        x = np.asarray(model.predict(b, verbose=0))
        y = np.concatenate([b[i][1] for i in range(len(b))])
        return x, y

    def digest(x, y):
        h = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes())
        h.update(np.ascontiguousarray(y, np.int32).tobytes())
        return h.hexdigest()
"""


def test_workers_and_backends_see_identical_batches():
    namespace: dict = {}
    exec(textwrap.dedent(_BATCHES_CODE), namespace)
    x1, y1 = namespace["batches_seen"](1)
    x2, y2 = namespace["batches_seen"](2)
    assert x1.shape == (2 * 200, 32, 32, 3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    # and they are what indexing the object gives, batch by batch
    cfg = DataConfig(source="builtin", name="digits", image_size=32,
                     max_train_images=200)
    b = Batches(load_splits(cfg, 5).train, 16, 32, "resnet50", 5,
                shuffle=True, flip=True, crop_pad=3, epochs=2, start_epoch=1)
    np.testing.assert_array_equal(
        x1, np.concatenate([b[i][0] for i in range(len(b))]))

    import keras

    here = keras.backend.backend()
    others = [n for n in BACKENDS if n != here and importlib.util.find_spec(
        "tensorflow" if n == "tensorflow" else n)]
    if not others:
        pytest.skip("no second backend installed")
    other = others[0]
    theirs = _run_child(_BATCHES_CODE + """
    print(json.dumps({"backend": keras.backend.backend(),
                      "sha256": digest(*batches_seen(2))}))
    """, backend=other)
    assert theirs["backend"] == other
    assert theirs["sha256"] == namespace["digest"](x1, y1), (
        f"batches differ between {here} and {other}")


def test_tfds_keeps_native_size_and_resizes_per_batch(tfds_mock):
    cfg = DataConfig(source="tfds", name="cifar10", image_size=64,
                     validation_fraction=0)
    with tfds_mock(num_examples=24):
        s = load_splits(cfg, seed=0)
    # stored at CIFAR's native 32 px, not at the 64 px target
    assert s.train.images.images.shape == (24, 32, 32, 3)
    assert s.train.images.images.dtype == np.uint8
    x, y = Batches(s.train, 8, 64, "resnet50", 0)[0]
    assert x.shape == (8, 64, 64, 3) and y.shape == (8,)
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    again = Batches(s.train, 8, 64, "resnet50", 0, workers=2)[0][0]
    assert hashlib.sha256(again.tobytes()).hexdigest() == digest


def test_tfds_set_of_mixed_sizes_stays_encoded(tfds_mock):
    # tf_flowers' photos differ in size: kept as encoded bytes, decoded and
    # resized per batch.
    cfg = DataConfig(source="tfds", name="tf_flowers", image_size=32,
                     train_split="train", test_split="train",
                     validation_fraction=0)
    with tfds_mock(num_examples=10):
        s = load_splits(cfg, seed=0)
    blobs = s.train.images.blobs
    assert len(blobs) == 10 and all(isinstance(b, bytes) for b in blobs)
    x, _ = Batches(s.train, 4, 32, "resnet50", 0)[0]
    assert x.shape == (4, 32, 32, 3) and np.isfinite(x).all()


def _losses_seen_by_fit(split, workers, build_first):
    import keras

    from kerasft import backend
    from kerasft.data import Batches

    backend.seed_everything(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)), keras.layers.Flatten(),
        keras.layers.Dense(4, kernel_initializer="zeros"),
    ])
    model.compile(keras.optimizers.SGD(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = Batches(split, 8, 16, "resnet50", 3, shuffle=True, epochs=1,
                      workers=workers)
    if build_first:
        backend.build_compiled_state(model, batches[0])
    seen = []

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(logs["loss"]))

    model.fit(batches, shuffle=False, epochs=1, verbose=0,
              callbacks=[Losses()])
    return seen


def test_fit_sees_batch_zero_first_whatever_the_workers():
    """`kerasft train` builds the compiled metrics before `fit` (as the
    runner does), so Keras does not take batch 0 out of the workers' queue
    for its own build: the per-step losses of 1 and 2 workers are equal."""
    from kerasft.data.images import ArrayImages, Split

    rng = np.random.default_rng(0)
    split = Split(ArrayImages(rng.integers(0, 256, (48, 8, 8, 3), np.uint8)),
                  rng.integers(0, 4, 48))
    one = _losses_seen_by_fit(split, 1, build_first=True)
    two = _losses_seen_by_fit(split, 2, build_first=True)
    assert len(one) == len(two) == 6
    np.testing.assert_allclose(two, one, rtol=1e-6)
