"""Input pipeline: memory, time to the first step, and images/s at 224 px.

Usage:

    python benchmarks/input_pipeline.py \\
        [--images 60000] [--jpegs 300] [--backends torch,tensorflow,jax]

Three parts, printed side by side in one run:

1. Memory and start-up, one child process per backend, on a CIFAR-10-sized
   set (60,000 synthetic 32 px images in an .npz, the `numpy` source) at
   224 px: seconds of data loading before the first step (load + first
   batch), peak RSS added by the data beyond its native size while 50
   batches stream, and, shown apart, model build and compile + first step.
2. Input throughput at 224 px through Keras's own PyDataset workers
   (`model.predict` of a global-average-pool model, so the loader is the
   bottleneck): a 32 px CIFAR-like set and a folder of ~500 px JPEGs, with
   1 and 2 workers, alternating rounds, medians. Beside them the same
   per-batch function run by grain's thread prefetch (a grain dataset fed
   to the same `model.predict`), as the anchor for the choice of loader.
3. How many cores would feed a GPU at 2,500 images/s.

Timings on a shared machine are noisy: compare the ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GPU_IMAGES_PER_S = 2500  # ResNet50, 224 px, mixed precision, one A100


def structured_images(n: int, size: int, seed: int) -> np.ndarray:
    """Photo-like uint8 images: smooth colour gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        a, b, c = rng.random((3, 3), dtype=np.float32)
        img = (a * ramp[:, None, None] + b * ramp[None, :, None]
               + c * (ramp[:, None, None] * ramp[None, :, None]))
        img = img / max(float(img.max()), 1e-6) * 220
        img += rng.normal(0, 12, (size, size, 3)).astype(np.float32)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_jpeg_folder(root: Path, n: int) -> Path:
    from PIL import Image

    for k in range(n):
        d = root / f"class{k % 2}"
        d.mkdir(parents=True, exist_ok=True)
        img = structured_images(1, 500, 1000 + k)[0]
        Image.fromarray(img).save(d / f"{k}.jpg", quality=90)
    return root


# ------------------------------------------------------------ part 1: child

_CHILD = r"""
import json, re, sys, time
t_start = time.perf_counter()
import keras, numpy as np
from kerasft.config import DataConfig, ModelConfig
from kerasft.data import Batches, default_workers, load_splits
from kerasft.model import build_model

def status(key):
    text = open("/proc/self/status").read()
    return int(re.search(key + r":\s+(\d+)", text).group(1)) / 1024

path, batch = sys.argv[1], int(sys.argv[2])
imports = time.perf_counter() - t_start
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
t0 = time.perf_counter()
splits = load_splits(DataConfig(source="numpy", path=path, image_size=224,
                                validation_fraction=0.1), 0)
t_load = time.perf_counter() - t0
train = Batches(splits.train, batch, 224, "resnet50", 0, shuffle=True,
                flip=True, crop_pad=4, workers=default_workers())
train[0]
t_first = time.perf_counter() - t0
native = sum(s.images.images.nbytes for s in
             (splits.train, splits.validation, splits.test)) / 2**20
for i in range(1, min(50, len(train))):
    train[i]
peak_data = status("VmHWM") - base - native
t1 = time.perf_counter()
model = build_model(ModelConfig(weights="none"), splits.num_classes, 224)
t_build = time.perf_counter() - t1
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    from_logits=True), metrics=["accuracy"])
t2 = time.perf_counter()
model.fit(Batches(splits.train, batch, 224, "resnet50", 0, max_steps=1,
                  workers=default_workers()), verbose=0)
t_step = time.perf_counter() - t2
print(json.dumps(dict(
    backend=keras.backend.backend(), images=len(splits.train)
    + len(splits.validation) + len(splits.test), native_mb=native,
    imports_s=imports, load_s=t_load, first_batch_s=t_first,
    data_peak_added_mb=peak_data, build_s=t_build,
    compile_first_step_s=t_step, peak_total_mb=status("VmHWM") - base)))
"""


def startup(npz: Path, backend: str, batch: int) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(REPO),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(npz), str(batch)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if proc.returncode != 0:
        return {"backend": backend, "error": proc.stderr.strip()[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------- part 2: throughput


def keras_rate(batches, model) -> float:
    t = time.perf_counter()
    model.predict(batches, verbose=0)
    return len(batches.split) / (time.perf_counter() - t)


def grain_rate(batches, threads: int, model) -> float:
    import grain

    ds = grain.MapDataset.range(len(batches)).map(batches.__getitem__)
    it = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=threads, prefetch_buffer_size=2 * threads))
    t = time.perf_counter()
    model.predict(it, verbose=0)
    return len(batches.split) / (time.perf_counter() - t)


def throughput(sources: dict, rounds: int, batch: int, workers_list,
               loaders) -> dict:
    import keras

    from kerasft.data import Batches

    model = keras.Sequential([keras.Input((224, 224, 3)),
                              keras.layers.GlobalAveragePooling2D()])
    model.predict(np.zeros((batch, 224, 224, 3), np.float32), verbose=0)
    results: dict = {}
    for _ in range(rounds):  # alternate every setting within each round
        for name, split in sources.items():
            for workers in workers_list:
                b = Batches(split, batch, 224, "resnet50", 0, shuffle=True,
                            flip=True, workers=workers)
                if "keras" in loaders:
                    results.setdefault((name, "keras", workers), []).append(
                        keras_rate(b, model))
                if "grain" in loaders:
                    results.setdefault((name, "grain", workers), []).append(
                        grain_rate(b, workers, model))
    return {k: statistics.median(v) for k, v in results.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60000)
    p.add_argument("--jpegs", type=int, default=300)
    p.add_argument("--cifar-throughput-images", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--backends", default="torch,tensorflow,jax",
                   help="part 1's backends; empty: leave part 1 out")
    p.add_argument("--workers", default="1,2",
                   help="part 2's worker counts, the first is the base")
    p.add_argument("--loaders", default="keras,grain",
                   help="part 2's loaders (grain needs the grain package)")
    args = p.parse_args()
    workers_list = [int(w) for w in args.workers.split(",")]
    loaders = args.loaders.split(",")
    sys.path.insert(0, str(REPO))
    tmp = Path(tempfile.mkdtemp(prefix="kerasft-input-"))
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()}")

    if args.backends:
        startup_table(tmp, args)
    part2(tmp, args, workers_list, loaders)


def startup_table(tmp: Path, args) -> None:
    npz = tmp / "cifar_like.npz"
    x = structured_images(args.images, 32, 0)
    np.savez(npz, x_train=x, y_train=np.arange(args.images) % 10)
    print(f"\n1. {args.images:,} images at 32 px (native {x.nbytes / 2**20:.0f}"
          f" MB; {args.images * 224 * 224 * 3 / 2**30:.1f} GB if "
          f"materialized at 224 px), batch {args.batch}")
    del x
    print(f"{'backend':<11}{'imports':>8}{'load':>7}{'1st batch':>10}"
          f"{'data peak +MB':>14}{'model build':>12}{'compile+step':>13}")
    for backend in args.backends.split(","):
        r = startup(npz, backend, args.batch)
        if "error" in r:
            print(f"{backend:<11}failed: {r['error']}")
            continue
        print(f"{backend:<11}{r['imports_s']:>7.1f}s{r['load_s']:>6.1f}s"
              f"{r['first_batch_s']:>9.2f}s{r['data_peak_added_mb']:>14.0f}"
              f"{r['build_s']:>11.1f}s{r['compile_first_step_s']:>12.1f}s")
    print("  load = reading the source into native-size storage; 1st batch ="
          " load + the first 224 px batch\n  (data loading before the first "
          "step); data peak = peak RSS while 50 batches streamed,\n  beyond "
          "the baseline and the native-size data.")


def part2(tmp: Path, args, workers_list, loaders) -> None:
    from PIL import Image  # noqa: F401  (imported before timing)

    from kerasft.data.images import ArrayImages, Split
    from kerasft.data.sources import load_splits
    from kerasft.config import DataConfig

    n = args.cifar_throughput_images
    cifar = Split(ArrayImages(structured_images(n, 32, 1)), np.arange(n) % 10)
    folder = write_jpeg_folder(tmp / "jpegs", args.jpegs)
    jpeg = load_splits(DataConfig(source="folder", path=str(folder),
                                  validation_fraction=0), 0).train
    sources = {"32 px CIFAR-like": cifar,
               f"~500 px JPEG ({len(jpeg)} files)": jpeg}
    rates = throughput(sources, args.rounds, args.batch, workers_list,
                       loaders)
    w0 = workers_list[0]
    print(f"\n2. input throughput at 224 px, images/s (median of "
          f"{args.rounds} alternating rounds; {os.cpu_count()} cores)")
    print(f"{'source':<28}{'loader':<8}"
          + "".join(f"{f'{w} worker' + ('s' if w > 1 else ''):>11}"
                    for w in workers_list)
          + "".join(f"{f'{w}w/{w0}w':>8}" for w in workers_list[1:])
          + f"{'per core':>10}{'cores @2500/s':>15}")
    for name in sources:
        for loader in loaders:
            r = [rates[(name, loader, w)] for w in workers_list]
            per_core = r[0] / w0
            print(f"{name:<28}{loader:<8}"
                  + "".join(f"{v:>11.0f}" for v in r)
                  + "".join(f"{v / r[0]:>8.2f}" for v in r[1:])
                  + f"{per_core:>10.0f}{GPU_IMAGES_PER_S / per_core:>15.1f}")
    print("  keras = kerasft's Batches through Keras PyDataset workers "
          "(model.predict);\n  grain = the same per-batch function run by "
          "grain's thread prefetch, fed to the same model.predict.\n  per core = the "
          f"{w0}-worker rate / {w0}; cores @2500/s = {GPU_IMAGES_PER_S} / "
          "per-core rate (linear scaling assumed: compare the ratios).")


if __name__ == "__main__":
    main()
