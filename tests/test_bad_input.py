"""Bad input, as a new user types it: one line, exit code 2, nothing left.

One table of cases (CLI flags, `--set` overrides, YAML files, `.npz` arrays,
image folders). Each runs the real CLI in-process and must stop before any
model is built: exit code 2, no traceback, a single ``Error: ...`` line that
names the key, value or file, and no run directory anywhere.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras  # the backend is fixed before any case runs (see backend_other)
import numpy as np
import pytest

from conftest import REPO, TINY, run_cli

BACKENDS = ("tensorflow", "torch", "jax")
RNG = np.random.default_rng(0)
N = 40  # images per .npz case: 4 classes of 10, enough to carve every split
X8 = RNG.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
X01 = RNG.random((N, 8, 8, 3)).astype(np.float32)
Y = np.arange(N) % 4
NAMES = np.array(["w", "x", "y", "z"])


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: list[str]
    setup: Callable[[Path], dict] | None = None
    absent: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)


def quick(*extra: str) -> list[str]:
    return ["train", "-c", "quickstart", *TINY, *extra]


# ------------------------------------------------------------------ files


def write(name: str, content: str | bytes):
    def setup(tmp: Path) -> dict:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return {"file": str(path)}
    return setup


def npz(**arrays):
    def setup(tmp: Path) -> dict:
        path = tmp / "data.npz"
        np.savez(path, **arrays)
        return {"npz": str(path)}
    return setup


def with_value(x: np.ndarray, index, value) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


def numpy_case(id, setup, expect, *extra: str, absent=()):
    return Case(id, quick("--set", "data.source=numpy",
                          "--set", "data.path={npz}",
                          "--set", "data.validation_fraction=0.2", *extra),
                expect, setup, list(absent))


def images(root: Path, classes=("a", "b"), per_class=6, bad=None) -> None:
    """An image folder of small PNGs; `bad` = {relative path: bytes}."""
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(RNG.integers(0, 256, (10, 12, 3), np.uint8)).save(
                root / c / f"{i}.png")
    for rel, data in (bad or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def jpeg_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), np.uint8)).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (32, 32, 3), np.uint8)).save(
        buf, "PNG")
    return buf.getvalue()


def folder(bad=None, classes=("a", "b"), per_class=6, split_dirs=None):
    def setup(tmp: Path) -> dict:
        root = tmp / "imgs"
        if split_dirs:
            for sub, cls in split_dirs.items():
                images(root / sub, cls, per_class)
        else:
            images(root, classes, per_class, bad)
        return {"folder": str(root)}
    return setup


def float_tiff(tmp: Path) -> dict:
    from PIL import Image

    root = tmp / "imgs"
    images(root)
    Image.fromarray(RNG.uniform(-1, 1, (9, 9)).astype(np.float32), "F").save(
        root / "a" / "signed.tif")
    return {"folder": str(root)}


def folder_case(id, setup, expect, *extra):
    return Case(id, quick("--set", "data.source=folder",
                          "--set", "data.path={folder}",
                          "--set", "data.validation_fraction=0.2", *extra),
                expect, setup)


def unfinished_run(state: str):
    """A run directory `run` whose status.json says `state` (a "running"
    one whose pid is gone reads as interrupted), with a model.keras for a
    completed one (its content is not read before the checks)."""
    def setup(tmp: Path) -> dict:
        run = tmp / "run"
        run.mkdir()
        (run / "config.yaml").write_text(
            (REPO / "configs" / "quickstart.yaml").read_text())
        status = {"state": state, "epochs_done": 1, "pid": 2**22 + 1,
                  "host": socket.gethostname()}
        (run / "status.json").write_text(json.dumps(status))
        if state == "completed":
            (run / "model.keras").write_bytes(b"not read")
        return {}
    return setup


def laughs(levels: int = 9) -> str:
    """The "billion laughs": 9 levels of 9 aliases, ~0.4 KB of YAML."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def flow_laughs(levels: int = 6) -> str:
    parts = ["&l0 [1,1,1,1,1,1,1,1,1,1]"]
    for i in range(1, levels):
        parts.append(f"&l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    return "[" + ", ".join(parts) + "]"


OTHER_BACKEND = next(b for b in BACKENDS if b != keras.backend.backend())
ONE_HOT = np.eye(4, dtype=np.float32)[Y]

CASES = [
    # ---------------------------------------------------------- flags
    Case("abbreviated_flag", quick("--epoch", "3"),
         ["unrecognized arguments: --epoch 3"]),
    Case("abbreviated_set", quick("--se", "train.epochs=3"),
         ["unrecognized arguments", "--se"]),
    Case("unknown_flag", quick("--frobnicate"), ["--frobnicate"]),
    Case("lr_not_a_number", quick("--lr", "fast"), ["--lr", "'fast'"]),
    Case("epochs_not_an_int", quick("--epochs", "1.5"), ["--epochs", "'1.5'"]),
    Case("backend_unknown", quick("--backend", "mxnet"),
         ["--backend", "'mxnet'"]),
    Case("seed_negative", quick("--seed", "-1"), ["seed", "-1", "2**32"]),
    Case("seed_too_big", quick("--seed", str(2**40)), ["seed", str(2**40)]),
    Case("image_size_huge", quick("--image-size", "100000"),
         ["data.image_size", "100000", "at most 1024"]),
    Case("image_size_tiny", quick("--image-size", "16"),
         ["data.image_size", "16", "at least 32"]),
    Case("batch_size_zero", quick("--batch-size", "0"),
         ["data.batch_size", "0"]),
    Case("epochs_zero", quick("--epochs", "0"), ["train.epochs", "0"]),
    Case("epochs_negative_phased", quick("--epochs", "-3", "--plan", "phased"),
         ["train.epochs", "-3"], absent=["plan.head_epochs"]),
    Case("lr_zero", quick("--lr", "0"), ["optimizer.learning_rate", "0"]),
    Case("lr_negative", quick("--lr", "-0.1"),
         ["optimizer.learning_rate", "-0.1"]),
    Case("lr_nan", quick("--lr", "nan"), ["optimizer.learning_rate", "nan"]),
    Case("lr_inf", quick("--lr", "inf"), ["optimizer.learning_rate", "inf"]),
    Case("steps_per_epoch_zero", quick("--steps-per-epoch", "0"),
         ["train.steps_per_epoch", "0"]),
    Case("workers_zero", quick("--workers", "0"), ["data.workers", "0"]),
    Case("max_train_images_zero", quick("--max-train-images", "0"),
         ["data.max_train_images", "0"]),
    Case("plan_unknown", quick("--plan", "partial"),
         ["plan.kind", "'partial'"]),
    Case("optimizer_unknown", quick("--optimizer", "rmsprop"),
         ["optimizer.name", "'rmsprop'"]),
    Case("arch_unknown", quick("--arch", "vgg16"), ["model.arch", "'vgg16'"]),
    Case("precision_unknown", quick("--precision", "float64"),
         ["train.precision", "'float64'"]),
    Case("weights_file_missing", quick("--weights", "{tmp}/nope.weights.h5"),
         ["model.weights", "nope.weights.h5", "no such file"]),
    Case("init_from_missing", quick("--init-from", "{tmp}/nope"),
         ["--init-from", "nope", "no such file"]),
    Case("init_from_dir_without_weights", quick("--init-from", "{tmp}"),
         ["--init-from", "initial.weights.h5"]),
    Case("config_missing", ["train", "-c", "no_such_config"],
         ["--config", "no_such_config", "quickstart"]),
    Case("out_under_a_file", quick("--out", "{file}/runs"),
         ["--out", "afile", "is a file"], write("afile", "x")),
    Case("backend_env_unknown", quick(), ["KERAS_BACKEND", "mxnet"],
         env={"KERAS_BACKEND": "mxnet"}),
    Case("backend_other_than_loaded", quick("--backend", OTHER_BACKEND),
         ["--backend", OTHER_BACKEND, "already loaded"]),
    # ---------------------------------------------------------- --set
    Case("set_without_equals", quick("--set", "train.epochs"),
         ["--set", "'train.epochs'"]),
    Case("set_empty_key", quick("--set", "=3"), ["--set", "empty key"]),
    Case("set_empty_key_part", quick("--set", "train..epochs=3"),
         ["--set", "empty key", "train..epochs"]),
    Case("set_section_to_a_value", quick("--set", "data=3"),
         ["--set data=3", "'data' is a section"],
         absent=["data.batch_size=8"]),
    Case("set_key_under_a_value", quick("--set", "seed.x=1"),
         ["--set seed.x=1", "'seed' is a value"]),
    Case("set_epochs_negative_phased",
         quick("--set", "plan.kind=phased", "--set", "train.epochs=-3"),
         ["train.epochs", "-3"], absent=["plan.head_epochs"]),
    Case("set_unknown_section", quick("--set", "trian.epochs=3"),
         ["unknown key 'trian'"]),
    Case("set_unknown_key", quick("--set", "data.colour=red"),
         ["unknown key 'data.colour'"]),
    Case("set_wrong_type", quick("--set", "train.epochs=three"),
         ["train.epochs", "'three'"]),
    Case("set_bool_for_int", quick("--set", "seed=true"), ["seed", "True"]),
    Case("set_weight_decay_nan", quick("--set", "optimizer.weight_decay=.nan"),
         ["optimizer.weight_decay", "nan"]),
    Case("set_clipnorm_negative", quick("--set", "optimizer.clipnorm=-1"),
         ["optimizer.clipnorm", "-1"]),
    Case("set_dropout_above_one", quick("--set", "model.dropout=1.5"),
         ["model.dropout", "1.5"]),
    Case("set_unfreeze_7", quick("--set", "plan.unfreeze=7"),
         ["plan.unfreeze", "7"]),
    Case("set_unfreeze_word", quick("--set", "plan.unfreeze=some"),
         ["plan.unfreeze", "'some'"]),
    Case("set_verbose_5", quick("--set", "train.verbose=5"),
         ["train.verbose", "5"]),
    Case("set_validation_fraction_one",
         quick("--set", "data.validation_fraction=1"),
         ["data.validation_fraction", "1"]),
    Case("set_folder_without_path", quick("--set", "data.source=folder"),
         ["data.path", "folder"]),
    Case("set_numpy_without_path", quick("--set", "data.source=numpy"),
         ["data.path", ".npz"]),
    Case("set_builtin_unknown", quick("--set", "data.name=mnist"),
         ["data.name", "'mnist'", "digits"]),
    Case("set_on_bad_image_unknown", quick("--set", "data.on_bad_image=ignore"),
         ["data.on_bad_image", "'ignore'", "skip"]),
    Case("set_record_every_steps_zero", quick("--set", "record.every_steps=0"),
         ["record.every_steps", "0"]),
    Case("set_jit_compile_word", quick("--set", "train.jit_compile=maybe"),
         ["train.jit_compile", "'maybe'"]),
    Case("set_billion_laughs", quick("--set", "name=" + flow_laughs()),
         ["--set name", "expand"]),
    # ---------------------------------------------------------- YAML files
    Case("yaml_billion_laughs", ["train", "-c", "{file}"],
         ["bad.yaml", "expand to more than 100,000"],
         write("bad.yaml", laughs())),
    Case("yaml_too_big", ["train", "-c", "{file}"],
         ["bad.yaml", "is not a config"],
         write("bad.yaml", "# padding\n" * 200_000)),
    Case("yaml_syntax_error", ["train", "-c", "{file}"],
         ["bad.yaml", "not valid YAML", "line"],
         write("bad.yaml", "train: {epochs: 3\nseed: 1\n")),
    Case("yaml_python_tag", ["train", "-c", "{file}"],
         ["bad.yaml", "python/object"],
         write("bad.yaml", "name: !!python/object/apply:os.system ['true']\n")),
    Case("yaml_top_level_list", ["train", "-c", "{file}"],
         ["bad.yaml", "mapping"], write("bad.yaml", "- 1\n- 2\n")),
    Case("yaml_section_is_a_number", ["train", "-c", "{file}"],
         ["bad.yaml", "train", "must be a mapping", "5"],
         write("bad.yaml", "train: 5\n")),
    Case("yaml_unknown_section", ["train", "-c", "{file}"],
         ["bad.yaml", "unknown key 'trainer'"],
         write("bad.yaml", "trainer: {epochs: 3}\n")),
    Case("yaml_nested_too_deep", ["train", "-c", "{file}"],
         ["bad.yaml", "nested too deeply"],
         write("bad.yaml", "name: " + "[" * 700 + "]" * 700 + "\n")),
    Case("yaml_not_utf8", ["train", "-c", "{file}"],
         ["bad.yaml", "UTF-8"], write("bad.yaml", b"name: \xff\xfe\x00\x81\n")),
    Case("yaml_recursive_alias", ["train", "-c", "{file}"],
         ["bad.yaml", "recursive"], write("bad.yaml", "name: &a [*a]\n")),
    Case("yaml_epochs_negative_phased", ["train", "-c", "{file}"],
         ["bad.yaml", "train.epochs", "-3"],
         write("bad.yaml", "plan: {kind: phased}\ntrain: {epochs: -3}\n"),
         absent=["plan.head_epochs"]),
    Case("yaml_image_size_huge", ["train", "-c", "{file}"],
         ["bad.yaml", "data.image_size", "100000"],
         write("bad.yaml", "data: {image_size: 100000}\n")),
    # ---------------------------------------------------------- .npz arrays
    numpy_case("npz_nan_pixel", npz(x_train=with_value(X01, (3, 1, 1, 0),
                                                       np.nan), y_train=Y),
               ["x_train", "data.npz", "NaN or infinite", "image 3"]),
    numpy_case("npz_inf_pixel", npz(x_train=with_value(X01, (5, 0, 0, 2),
                                                       np.inf), y_train=Y),
               ["x_train", "NaN or infinite", "image 5"]),
    numpy_case("npz_one_pixel_above_one",
               npz(x_train=with_value(X01, (7, 2, 2, 1), 1.0001), y_train=Y),
               ["x_train", "above 1", "image 7", "does not clip"]),
    numpy_case("npz_minus_one_to_one", npz(x_train=X01 * 2 - 1, y_train=Y),
               ["x_train", "[0, 1] or [0, 255]", "(x + 1) / 2"]),
    numpy_case("npz_floats_above_255", npz(x_train=X01 * 300, y_train=Y),
               ["x_train", "[0, 1] or [0, 255]"]),
    numpy_case("npz_int32_above_255",
               npz(x_train=(X01 * 1000).astype(np.int32), y_train=Y),
               ["x_train", "int32", "[0, 255]"]),
    numpy_case("npz_negative_ints",
               npz(x_train=with_value(X8.astype(np.int16), 0, -5), y_train=Y),
               ["x_train", "int16", "-5"]),
    numpy_case("npz_bool_images", npz(x_train=X8 > 128, y_train=Y),
               ["x_train", "dtype bool"]),
    numpy_case("npz_string_images",
               npz(x_train=np.array(["img"] * N), y_train=Y),
               ["x_train", "dtype <U3"]),
    numpy_case("npz_images_2d", npz(x_train=X8.reshape(N, -1)[:, :64],
                                    y_train=Y),
               ["x_train", "shape (40, 64)"]),
    numpy_case("npz_five_channels",
               npz(x_train=RNG.integers(0, 256, (N, 8, 8, 5), np.uint8),
                   y_train=Y),
               ["x_train", "shape (40, 8, 8, 5)"]),
    numpy_case("npz_images_without_pixels",
               npz(x_train=np.zeros((N, 0, 8, 3), np.uint8), y_train=Y),
               ["x_train", "no pixels"]),
    numpy_case("npz_three_images", npz(x_train=X8[:3], y_train=Y[:3]),
               ["data.npz", "3 images are too few", "test split"]),
    numpy_case("npz_labels_3d", npz(x_train=X8, y_train=Y.reshape(N, 1, 1)),
               ["y_train", "one integer label per image",
                "shape (40, 1, 1)"]),
    numpy_case("npz_labels_beyond_class_names",
               npz(x_train=X8, y_train=with_value(Y, 9, 4), class_names=NAMES),
               ["y_train", "below the number of classes (4)", "4 at index 9"]),
    numpy_case("npz_negative_label", npz(x_train=X8, y_train=with_value(Y, 2,
                                                                       -1)),
               ["y_train", "0 or more", "-1 at index 2"]),
    numpy_case("npz_float_labels",
               npz(x_train=X8, y_train=with_value(Y.astype(float), 4, 0.5)),
               ["y_train", "fractions", "0.5", "index 4"]),
    numpy_case("npz_nan_label",
               npz(x_train=X8, y_train=with_value(Y.astype(float), 1, np.nan)),
               ["y_train", "NaN", "index 1"]),
    numpy_case("npz_one_hot_labels", npz(x_train=X8, y_train=ONE_HOT),
               ["y_train", "shape (40, 4)", "one-hot", "argmax"]),
    numpy_case("npz_two_column_labels",
               npz(x_train=X8, y_train=np.stack([Y, Y], 1)),
               ["y_train", "shape (40, 2)"]),
    numpy_case("npz_string_labels",
               npz(x_train=X8, y_train=np.array(["cat", "dog"] * (N // 2))),
               ["y_train", "strings", "'cat'", "class_names"]),
    numpy_case("npz_bool_labels", npz(x_train=X8, y_train=Y > 1),
               ["y_train", "booleans"]),
    numpy_case("npz_x_test_without_y_test",
               npz(x_train=X8, y_train=Y, x_test=X8[:8]),
               ["data.npz", "x_test is given without y_test"]),
    numpy_case("npz_y_test_without_x_test",
               npz(x_train=X8, y_train=Y, y_test=Y[:8]),
               ["data.npz", "y_test is given without x_test"]),
    numpy_case("npz_label_count_mismatch", npz(x_train=X8, y_train=Y[:-1]),
               ["x_train has 40 images", "39 labels"]),
    numpy_case("npz_test_label_count_mismatch",
               npz(x_train=X8, y_train=Y, x_test=X8[:8], y_test=Y[:7]),
               ["x_test has 8 images", "7 labels"]),
    numpy_case("npz_test_label_out_of_range",
               npz(x_train=X8, y_train=Y, x_test=X8[:8],
                   y_test=with_value(Y[:8], 3, 7), class_names=NAMES),
               ["y_test", "below the number of classes (4)", "7 at index 3"]),
    numpy_case("npz_empty_test_split",
               npz(x_train=X8, y_train=Y, x_test=X8[:0], y_test=Y[:0]),
               ["test split", "empty"]),
    numpy_case("npz_no_images", npz(x_train=X8[:0], y_train=Y[:0]),
               ["data.npz", "no images"]),
    numpy_case("npz_single_class", npz(x_train=X8, y_train=Y * 0),
               ["data.npz", "single class"]),
    numpy_case("npz_missing_x_train", npz(y_train=Y),
               ["data.npz", "Missing: x_train"]),
    numpy_case("npz_class_names_2d",
               npz(x_train=X8, y_train=Y, class_names=NAMES.reshape(2, 2)),
               ["data.npz", "class_names", "1-D"]),
    numpy_case("npz_object_array",
               npz(x_train=X8, y_train=np.array([[1], [1, 2]] * (N // 2),
                                                dtype=object)),
               ["data.npz", "pickle"]),
    Case("npz_not_a_zip", quick("--set", "data.source=numpy",
                                "--set", "data.path={file}"),
         ["data.npz", "not a readable .npz"], write("data.npz", b"PK\x03\x04"
                                                    b"garbage" * 10)),
    Case("npz_file_missing", quick("--set", "data.source=numpy",
                                   "--set", "data.path={tmp}/nope.npz"),
         ["data.path", "nope.npz", "no such file"]),
    # ---------------------------------------------------------- folders
    folder_case("folder_truncated_jpeg",
                folder({"a/cut.jpg": jpeg_bytes()[:600]}),
                ["cut.jpg", "cannot be decoded", "data.on_bad_image"]),
    folder_case("folder_truncated_png",
                folder({"b/cut.png": png_bytes()[:300]}),
                ["cut.png", "cannot be decoded"]),
    folder_case("folder_text_named_png",
                folder({"a/notes.png": b"these are my notes\n"}),
                ["notes.png", "cannot be decoded"]),
    folder_case("folder_empty_jpeg", folder({"b/empty.jpg": b""}),
                ["empty.jpg", "cannot be decoded"]),
    folder_case("folder_float_tiff_out_of_range", float_tiff,
                ["signed.tif", "[0, 1] or [0, 255]"]),
    folder_case("folder_every_image_bad_skip",
                folder({f"{c}/{i}.jpg": b"junk" for c in "ab"
                        for i in range(6)}, per_class=0),
                ["every one of the", "unreadable"],
                "--set", "data.on_bad_image=skip"),
    folder_case("folder_one_class", folder(classes=("only",)),
                ["imgs", "at least two class"]),
    folder_case("folder_empty_class_folders", folder(per_class=0),
                ["imgs", "at least two class", "0 image(s)"]),
    folder_case("folder_train_test_classes_differ",
                folder(split_dirs={"train": ("a", "b"), "test": ("a", "c")}),
                ["test", "same class folders"]),
    # ---------------------------------------------------------- subsets
    Case("classes_unknown", quick("--set", "data.classes=[5, 11]"),
         ["data.classes", "'11'", "not a class", "are: 0, 1, 2"]),
    Case("classes_repeated", quick("--set", "data.classes=[5, 6, 5]"),
         ["data.classes", "[5, 6, 5]", "5 is listed more than once"]),
    Case("classes_only_one", quick("--set", "data.classes=[5]"),
         ["data.classes", "[5]", "at least 2"]),
    Case("classes_not_a_list", quick("--set", "data.classes=5"),
         ["data.classes", "expected a list", "Received: 5"]),
    Case("classes_entry_not_a_name", quick("--set", "data.classes=[5, [6]]"),
         ["data.classes[1]", "[6]"]),
    Case("train_per_class_zero", quick("--set", "data.train_per_class=0"),
         ["data.train_per_class", "0", "positive integer"]),
    Case("train_per_class_too_many",
         quick("--set", "data.classes=[5, 6]",
               "--set", "data.train_per_class=500"),
         ["data.train_per_class", "500", "training images of class",
          "Give at most"]),
    # ---------------------------------------------------------- weights
    Case("weights_run_not_finished", quick("--weights", "{tmp}/run"),
         ["model.weights", "did not finish", "status: failed",
          "--resume"], unfinished_run("failed")),
    Case("weights_run_interrupted", quick("--weights", "{tmp}"),
         ["model.weights", "did not finish", "status: interrupted",
          "the newest run in"], unfinished_run("running")),
    Case("weights_folder_without_runs", quick("--weights", "{tmp}"),
         ["model.weights", "a folder without a run"]),
    Case("weights_run_of_other_arch",
         quick("--weights", "{tmp}/run", "--arch", "resnet101"),
         ["model.weights", "resnet50", "model.arch resnet101"],
         unfinished_run("completed")),
    Case("folder_missing", quick("--set", "data.source=folder",
                                 "--set", "data.path={tmp}/nope"),
         ["data.path", "nope", "no such folder"]),
    Case("folder_is_a_file", quick("--set", "data.source=folder",
                                   "--set", "data.path={file}"),
         ["data.path", "afile", "folder"], write("afile", "x")),
]


def _runs_in_repo() -> set[str]:
    runs = REPO / "runs"
    return {p.name for p in runs.iterdir()} if runs.is_dir() else set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_left(case, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    files = case.setup(tmp_path) if case.setup else {}
    argv = [a.format(tmp=tmp_path, **files) for a in case.argv]
    out = tmp_path / "runs"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    before = _runs_in_repo()
    r = run_cli(argv)  # an exception other than KerasftError fails here
    assert r.code == 2, r
    assert "Traceback" not in r.err and "Traceback" not in r.out
    lines = r.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.err
    for text in case.expect:
        assert text in errors[0], (text, errors[0])
    for text in case.absent:
        assert text not in errors[0], (text, errors[0])
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    assert _runs_in_repo() == before


def test_table_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_kerasft_train_is_callable_again_and_again(tmp_path):
    """`kerasft.train(cfg)` as the README shows it, twice in one process."""
    import kerasft
    from kerasft.config import load_config
    from kerasft.errors import DataError

    np.savez(tmp_path / "d.npz", x_train=with_value(X01, 0, np.nan),
             y_train=Y)
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [
        "data.source=numpy", f"data.path={tmp_path / 'd.npz'}"])
    for _ in range(2):  # the first call imports kerasft.train itself
        with pytest.raises(DataError, match="NaN or infinite"):
            kerasft.train(cfg, out=tmp_path / "runs", report=False)
    assert not (tmp_path / "runs").exists()
