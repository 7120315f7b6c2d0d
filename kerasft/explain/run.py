"""`kerasft explain`: Grad-CAM and saliency of a finished run's model on
the user's own images, one figure per image."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kerasft.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """What `explain_images` found for one image.

    Attributes:
        source: the image file.
        figure: the PNG written.
        arrays: the ``.npz`` beside it, with the numbers drawn: ``image``
            (uint8, as the model saw it), ``cam``, ``cam_linear`` (before
            the ReLU), ``saliency``,
            ``probabilities``, ``explained`` (class index) and ``layer``.
        explained: the class the maps are for.
        predicted: the model's top class.
        probabilities: (K,) the model's softmax output.
        layer: the Grad-CAM layer.
        cam: (h, w) the Grad-CAM map, unnormalised.
        saliency: (H, W) the saliency map.
    """

    source: Path
    figure: Path
    arrays: Path
    explained: str
    predicted: str
    probabilities: np.ndarray
    layer: str
    cam: np.ndarray
    saliency: np.ndarray


def read_image(path: str | os.PathLike,
               size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An image file (PNG, JPEG, anything Pillow reads; any size) as
    (size, size, 3) uint8 RGB, resized as training resizes, with its
    original (width, height).

    Raises:
        DataError: no such file, or not an image Pillow can decode.
    """
    from PIL import Image, UnidentifiedImageError

    from kerasft.data.images import resize_uint8, rgb_image

    p = Path(path)
    if p.is_dir():
        raise DataError(
            f"kerasft explain: expected an image file. Received: {str(path)!r} "
            "(a folder). Give the paths of the images in it, e.g. "
            f"{str(p / '*.jpg')!r}."
        )
    if not p.is_file():
        raise DataError(
            f"kerasft explain: expected an image file. Received: {str(path)!r} "
            "(no such file). Give the path of a PNG or JPEG image."
        )
    try:
        with Image.open(p) as img:
            img.load()
            rgb = np.asarray(rgb_image(img, str(p)))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(
            f"kerasft explain: {str(path)!r} is not an image (Pillow cannot "
            "identify its format). Give a PNG or JPEG image."
        ) from None
    except Image.DecompressionBombError as e:
        raise DataError(
            f"kerasft explain: {str(path)!r} is too large to decode safely "
            f"({e}). Downscale it first; it is resized to the run's image "
            "size anyway."
        ) from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        raise DataError(
            f"kerasft explain: {str(path)!r} cannot be decoded "
            f"({type(e).__name__}: {e}); the file is damaged or truncated. "
            "Give an intact PNG or JPEG image."
        ) from None
    return resize_uint8(rgb[None], size)[0], (rgb.shape[1], rgb.shape[0])


def _figure_paths(sources: list[Path], out: Path) -> list[Path]:
    """``<stem>.png`` per image (its ``.npz`` beside it); repeated stems
    get ``-2``, ``-3``... (never a name another image already got, even
    one called ``<stem>-2``; compared case-blind, for case-blind disks).

    Raises:
        ConfigError: a figure or its ``.npz`` would overwrite one of the
            images (``--out`` is the images' own folder).
    """
    inputs = {s.resolve() for s in sources}
    taken: set[str] = set()
    paths = []
    for s in sources:
        n = 1
        while (name := s.stem if n == 1 else f"{s.stem}-{n}").casefold() \
                in taken:
            n += 1
        taken.add(name.casefold())
        figure = out / f"{name}.png"
        for path in (figure, figure.with_suffix(".npz")):
            if path.resolve() in inputs:
                raise ConfigError(
                    f"--out: the figures would overwrite an image given. "
                    f"Received: --out {str(out)!r}, where {path.name} is "
                    "both an input and an output. Give another folder.")
        paths.append(figure)
    return paths


def _class_index(name: str, names: list[str]) -> int:
    """`--class` as an index: one of `names`, or, for a run that records no
    class names (its classes are numbered), a number (checked against the
    model's outputs once it is loaded)."""
    if name in names:
        return names.index(name)
    if not names and name.isdigit():
        return int(name)
    known = ", ".join(names) or "none recorded in data.json: give a number"
    raise ConfigError(
        f"--class: expected one of the run's classes ({known}). "
        f"Received: {name!r}")


def _check_out(out: Path) -> None:
    """`out` is, or can become, a folder (checked before the model loads)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out: expected a folder for the figures. Received: "
            f"{str(out)!r}, which is a file. Give a folder's path.")
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            f"--out: expected a folder for the figures. Received: "
            f"{str(out)!r}, under {str(parent)!r}, which is a file, not a "
            "folder. Give a folder's path.")


def explain_images(run_dir: str | os.PathLike, images: list,
                   out: str | os.PathLike | None = None,
                   class_name: str | None = None, layer: str | None = None,
                   smooth: int = 0,
                   on_result: Callable[[Explanation], None] | None = None,
                   ) -> list[Explanation]:
    """Explains a finished run's final model on image files.

    Every image and option is checked before the model is loaded. For each
    image: the model's top-3 predictions, and Grad-CAM and saliency maps for
    its predicted class (or `class_name`), drawn into one PNG.

    Args:
        run_dir: a finished kerasft run directory.
        images: image files (PNG, JPEG; any size: resized to the run's
            ``data.image_size``).
        out: folder for the figures. Defaults to ``<run_dir>/explain``.
        class_name: explain this class (one of the run's class names)
            instead of each image's predicted class. Defaults to `None`.
        layer: the Grad-CAM layer. Defaults to `None`
            (`kerasft.explain.default_layer`).
        smooth: SmoothGrad samples for the saliency map, 0 for the vanilla
            gradient. Defaults to `0`.
        on_result: called with each image's `Explanation` as soon as its
            figure is written (progress, for many images or a slow
            backend). Defaults to `None`.

    Returns:
        One `Explanation` per image, in order.

    Raises:
        RunDirError: not a finished run.
        DataError: a file that is not an image.
        ConfigError: an unknown class or layer, or a negative `smooth`.

    Example:

    ```python
    for e in explain_images("runs/20261126-quickstart-torch", ["cat.jpg"]):
        print(e.predicted, e.figure)
    ```
    """
    from kerasft.record.store import load_run, probabilities, write_npz
    from kerasft.rundir import atomic_path, final_weights

    model_file = final_weights(run_dir, key="kerasft explain RUN_DIR")
    run = load_run(model_file.parent)
    if smooth < 0:
        raise ConfigError(
            f"--smoothgrad: expected 0 (vanilla gradient) or a number of "
            f"noisy samples, e.g. 25. Received: {smooth}")
    if not images:
        raise ConfigError("kerasft explain: expected at least one IMAGE")
    names = [str(n) for n in (run.data or {}).get("class_names") or []]
    explained = (None if class_name is None
                 else _class_index(str(class_name), names))
    out = Path(out) if out is not None else run.path / "explain"
    _check_out(out)
    sources = [Path(p) for p in images]
    figures = _figure_paths(sources, out)
    size = int(run.config["data"]["image_size"])
    read = [read_image(p, size) for p in sources]  # all, before the model

    import keras

    from kerasft.data.batches import preprocess_fn
    from kerasft.explain.gradcam import grad_cam, resolve_layer
    from kerasft.explain.saliency_map import saliency, saliency_from
    from kerasft.render.attention import explanation_figure
    from kerasft.render.base import DPI, plain_text

    log.info("loading %s", model_file)
    model = keras.models.load_model(model_file, compile=False)
    target = resolve_layer(model, layer)
    if len(names) != model.output.shape[-1]:
        # no class names in data.json: number the classes, as the report does
        names = [str(i) for i in range(model.output.shape[-1])]
        if explained is not None and explained >= len(names):
            raise ConfigError(
                f"--class: expected a class index below {len(names)} (the "
                f"run records no class names; its model has {len(names)} "
                f"outputs). Received: {class_name!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"--out: cannot make the folder {str(out)!r} ({e.strerror}). "
            "Give a folder you can write to.") from None
    prep = preprocess_fn(run.config["model"]["arch"])
    how = ("vanilla gradient" if smooth == 0
           else f"SmoothGrad, {smooth} samples")
    results = []
    for source, (image, (width, height)), figure in zip(sources, read,
                                                         figures):
        x = prep(image[None].astype(np.float32))
        if explained is None:  # the predicted class: one forward pass first
            cls = int(np.argmax(keras.ops.convert_to_numpy(
                model(x, training=False))[0]))
        else:
            cls = explained
        cam = grad_cam(model, x, [cls], target)
        logits = cam.logits  # the same forward pass's outputs
        predicted = int(np.argmax(logits[0]))
        sal = (saliency_from(cam.input_grad) if smooth == 0
               else saliency(model, x, [cls], smooth=smooth))
        side = "x".join(str(v) for v in cam.maps.shape[1:])
        flat = (" -- a 1x1 map says nothing about where; use a larger "
                "image size" if cam.maps.shape[1:] == (1, 1) else "")
        with plain_text():
            fig = explanation_figure(
                f"{source.name} ({width}x{height}, resized to {size}x"
                f"{size}): predicted {names[predicted]}; maps for "
                f"{names[cls]} ({'predicted' if explained is None else '--class'})"
                f"; Grad-CAM map {side}{flat}",
                image, cam.maps[0], sal[0], logits[0], names, cls,
                target.name, how)
            with atomic_path(figure) as tmp:
                fig.savefig(tmp, dpi=DPI, format="png")
        probs = probabilities(logits)[0]
        arrays = figure.with_suffix(".npz")
        write_npz(arrays, image=image, cam=cam.maps[0],
                  cam_linear=cam.linear[0], saliency=sal[0],
                  probabilities=probs.astype(np.float32),
                  explained=np.array(cls), layer=np.array(target.name))
        results.append(Explanation(
            source, figure, arrays, names[cls], names[predicted], probs,
            target.name, cam.maps[0], sal[0]))
        if on_result is not None:
            on_result(results[-1])
        log.info("explained %s -> %s", source, figure)
    return results
