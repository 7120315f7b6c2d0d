"""The `kerasft` command line.

User mistakes print ``Error: ...`` on stderr and exit 2 (1 for failures at
run time), without a traceback. Keras and the backend are imported only
after the arguments are parsed, so ``--backend`` can still choose one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import sysconfig
import threading
from pathlib import Path

from kerasft import __version__
from kerasft.errors import ConfigError, KerasftError

DEFAULT_CONFIG = "cifar10_resnet50"
BACKENDS = ("tensorflow", "torch", "jax")

# Flags that are shorthands for config keys.
_FLAG_KEYS = {
    "epochs": "train.epochs",
    "steps_per_epoch": "train.steps_per_epoch",
    "batch_size": "data.batch_size",
    "image_size": "data.image_size",
    "max_train_images": "data.max_train_images",
    "max_test_images": "data.max_test_images",
    "workers": "data.workers",
    "arch": "model.arch",
    "weights": "model.weights",
    "plan": "plan.kind",
    "lr": "optimizer.learning_rate",
    "optimizer": "optimizer.name",
    "seed": "seed",
    "name": "name",
    "precision": "train.precision",
}


def config_dirs() -> list[Path]:
    """Where config names are looked up: ./configs, then the installed set."""
    dirs = [Path.cwd() / "configs"]
    data = Path(sysconfig.get_paths()["data"]) / "share" / "kerasft" / "configs"
    dirs.append(data)
    dirs.append(Path(__file__).resolve().parent.parent / "configs")
    return dirs


def resolve_config(name: str) -> Path:
    """A config path, or a shipped config's name (``quickstart``)."""
    path = Path(os.path.expanduser(name))
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") or path.parent.name == "configs":
        for d in config_dirs():
            candidate = d / f"{stem}.yaml"
            if candidate.is_file():
                return candidate
    shipped = sorted(
        {p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    )
    raise ConfigError(
        f"--config: expected a YAML file or a shipped config name "
        f"({', '.join(shipped) or 'none found'}). Received: {name!r}"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with kerasft's error style and no abbreviated options.

    `allow_abbrev=False`: argparse would otherwise take ``--epoch 3`` as
    ``--epochs 3`` (any unique prefix), so a typo would silently set
    another key. A usage error is one line, ``Error: ...``, exit code 2.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"Error: {message}. See '{self.prog} --help'.\n")


def _lr_value(text: str):
    """--lr: a number or ``auto`` (a range test per phase picks it)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or auto. Received: {text!r}") from None


def _add_run_flags(p: argparse.ArgumentParser, own: str) -> None:
    """The config, data and size flags `train` and `lr-find` share."""
    p.add_argument(
        "--config",
        "-c",
        help=(
            "YAML config file, or the name of a shipped config (quickstart, "
            "linear_probe, full_finetune, cifar10_resnet50). "
            f"Default: {DEFAULT_CONFIG} (with {own}: the run's own)"
        ),
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.epochs=3 (repeatable)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend to use (default: KERAS_BACKEND, else tensorflow)",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR_OR_FILE",
        help=(
            "start from exactly these weights: a run directory (its "
            "initial.weights.h5) or a weights file; for comparing backends"
        ),
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help=(
            "turn on the backend's deterministic ops (and say what could not "
            "be made deterministic); same as --set train.deterministic=true"
        ),
    )
    g = p.add_argument_group("shorthands for config keys")
    g.add_argument("--epochs", type=int, help="train.epochs")
    g.add_argument("--steps-per-epoch", type=int, help="train.steps_per_epoch")
    g.add_argument("--batch-size", type=int, help="data.batch_size")
    g.add_argument("--image-size", type=int, help="data.image_size")
    g.add_argument("--max-train-images", type=int, help="data.max_train_images")
    g.add_argument("--max-test-images", type=int, help="data.max_test_images")
    g.add_argument(
        "--workers", type=int,
        help="data.workers: threads building batches (default: one per core)",
    )
    g.add_argument("--arch", help="model.arch, e.g. resnet50 or resnet50v2")
    g.add_argument(
        "--weights", help="model.weights: imagenet, none, a weights file, "
        "or a finished run directory (its final weights' backbone, with a "
        "new head: transfer to a new task)"
    )
    g.add_argument("--plan", help="plan.kind: head, full or phased")
    g.add_argument("--lr", type=_lr_value,
                   help="optimizer.learning_rate: a number, or auto (an LR "
                   "range test at the start of each phase picks it)")
    g.add_argument("--optimizer", help="optimizer.name: sgd, adam or adamw")
    g.add_argument(
        "--precision",
        help="train.precision: float32, mixed_bfloat16 or mixed_float16",
    )
    g.add_argument("--seed", type=int, help="seed")
    g.add_argument("--name", help="run name (part of the run directory name)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kerasft",
        description=(
            "Fine-tune keras.applications ResNets on a new image data set "
            "and record what fine-tuning does, on the torch, tensorflow "
            "and jax backends."
        ),
        epilog="The backend comes from KERAS_BACKEND unless --backend is given.",
    )
    parser.add_argument(
        "--version", action="version", version=f"kerasft {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="fine-tune a model and write a run directory",
        description=(
            "Fine-tune a keras.applications ResNet as a config file says "
            "and write runs/<date-time>-<name>-<backend>/ with the resolved "
            "config, environment, per-epoch metrics, checkpoints, the final "
            "model and test metrics."
        ),
    )
    _add_run_flags(t, "--resume")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help=(
            "continue an interrupted or failed run from its last complete "
            "checkpoint, in the same run directory, on the backend it ran "
            "on; --epochs may extend it, other overrides must match its "
            "config.yaml"
        ),
    )
    t.add_argument("--out", help="parent folder of run dirs (default: runs)")
    t.add_argument(
        "--no-report",
        action="store_true",
        help="do not render the HTML report at the end",
    )
    f = sub.add_parser(
        "lr-find",
        help="LR range test: which learning rate for a phase",
        description=(
            "Train a plan phase for a bounded number of steps while the "
            "learning rate grows exponentially, on the same model, data "
            "and phase as train, then put everything back; write a plot "
            "of the loss against the rate with the suggested rate, and "
            "its numbers as JSON. Takes train's config and flags."
        ),
    )
    _add_run_flags(f, "--from")
    f.add_argument("--phase", type=int, default=1,
                   help="plan phase to test, 1-based (default: 1)")
    f.add_argument(
        "--from", dest="from_run", metavar="RUN_DIR",
        help=(
            "start from a run's weights at the start of --phase (its "
            "initial weights for phase 1, else the checkpoint at the end "
            "of the phase before); default: the config's model.weights, "
            "as if earlier phases had not run"
        ),
    )
    f.add_argument("--out", help="output folder (default: a new "
                   "lr_find/<date-time>-<name>-phase-N-<backend>)")
    f.add_argument("--steps", type=int,
                   help="lr_find.steps: most steps of the test (default: "
                   "100, or one pass over the training images if fewer, "
                   "at least 30)")
    f.add_argument("--start-lr", type=float, help="lr_find.start_lr (1e-7)")
    f.add_argument("--end-lr", type=float, help="lr_find.end_lr (10)")
    r = sub.add_parser(
        "report",
        help="render a run's figures and HTML report",
        description=(
            "Render RUN_DIR/report/: PNG figures of every recorded view and "
            "one static index.html that works offline from the file system."
        ),
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    r.add_argument("--open", action="store_true",
                   help="open index.html in the default web browser")
    r.add_argument("--all-layers", action="store_true",
                   help="every layer in per-layer figures (default: a selection)")
    r.add_argument("--embeddings-every-epoch", action="store_true",
                   help="one embedding panel per epoch (default: start vs end)")
    s = sub.add_parser(
        "study",
        help="train plan x learning rate x seed variants, then one page",
        description=(
            "Train every variant (plan x learning rate x seed) of a config "
            "one after the other, each seed's variants from the same "
            "initial weights and data, into OUT/runs/; then write "
            "OUT/index.html: a table with mean +- std over seeds, the "
            "comparison's figures and a verdict. Run the same command "
            "again to continue an unfinished study: finished variants are "
            "not trained again. Takes train's config and flags."
        ),
    )
    _add_run_flags(s, "--out's study")
    s.add_argument("--plans", required=True,
                   help="comma-separated plan kinds, e.g. head,phased,full; "
                   "scratch adds the no-transfer baseline (the seed's random "
                   "network, every layer and BatchNorm training)")
    s.add_argument("--lrs", help="comma-separated learning rates, e.g. "
                   "1e-3,1e-2 (default: the config's)")
    s.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 "
                   "(default: the config's)")
    s.add_argument("--out", help="the study folder (default: "
                   "studies/<config name>)")
    s.add_argument("--no-report", action="store_true",
                   help="do not render each run's own HTML report")
    s.add_argument("--open", action="store_true",
                   help="open index.html in the default web browser")
    c = sub.add_parser(
        "compare",
        help="lay any runs side by side (backends, plans, seeds, ...)",
        description=(
            "Compare two or more runs (the first is the reference). Any "
            "runs: curves overlaid, test metrics, timing, a per-run table, "
            "embeddings' k-NN accuracy. Runs with the reference's layers: "
            "per-layer and per-stage weight change from each run's own "
            "start, weight quantiles over epochs, embeddings side by side. "
            "Runs with the reference's start and maths (initial-weight "
            "fingerprint and config): weight-histogram distances, weight, "
            "probe activation and probe gradient differences, the largest "
            "divergences and the tolerance checks. Views it cannot draw are "
            "listed with the reason."
        ),
    )
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", help="output folder (default: a new "
                   "compare-<date-time>[-N] folder beside the first run)")
    c.add_argument("--open", action="store_true",
                   help="open index.html in the default web browser")
    c.add_argument("--check", action="store_true",
                   help="exit with status 1 if a tolerance check fails, "
                   "or if a run's checks were skipped (different start or "
                   "config) (default: report it and exit 0)")
    e = sub.add_parser(
        "explain",
        help="where a finished run's model looks, on your own images",
        description=(
            "For each IMAGE (PNG, JPEG, any size; resized to the run's "
            "image size): the run's final model's top-3 predictions, a "
            "Grad-CAM overlay and a gradient saliency map for the predicted "
            "class (or --class), one figure per image in --out."
        ),
    )
    e.add_argument("run_dir", metavar="RUN_DIR",
                   help="a finished run directory (or a folder of runs: "
                   "the newest)")
    e.add_argument("images", nargs="+", metavar="IMAGE")
    e.add_argument("--out", help="folder for the figures "
                   "(default: RUN_DIR/explain)")
    e.add_argument("--class", dest="class_name", metavar="NAME",
                   help="explain this class (one of the run's class names) "
                   "instead of each image's predicted class")
    e.add_argument("--layer", help="the Grad-CAM layer (default: the deepest "
                   "ResNet stage output whose map is at least 4x4)")
    e.add_argument("--smoothgrad", type=int, default=0, metavar="N",
                   help="SmoothGrad saliency over N noisy copies "
                   "(default: 0, the vanilla gradient)")
    e.add_argument("--backend", choices=BACKENDS,
                   help="Keras backend (default: KERAS_BACKEND)")
    return parser


def _explain(args: argparse.Namespace) -> int:
    _choose_backend(args.backend)
    _check_backend_installed()
    from kerasft.explain import explain_images

    def show(r) -> None:
        # Printed as each figure is written: many images, SmoothGrad or
        # JAX's first compilation take a while.
        top = r.probabilities.max()
        print(f"kerasft: {r.source}: predicted {r.predicted} ({top:.1%}); "
              f"maps for {r.explained} at {r.layer}: {r.figure}", flush=True)

    print(f"kerasft: explaining {len(args.images)} image(s) with the final "
          f"model of {args.run_dir}", flush=True)
    explain_images(args.run_dir, args.images, args.out, args.class_name,
                   args.layer, args.smoothgrad, on_result=show)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from kerasft.compare import compare_runs

    result = compare_runs(args.run_dirs, args.out)
    for w in result.warnings:
        print(f"kerasft: warning: {w}")
    from kerasft.compare.report import grouped_reasons

    for titles, reason in grouped_reasons(result.views, present=True):
        print(f"kerasft: {', '.join(titles)}: {reason}")
    for titles, reason in grouped_reasons(result.views):
        print(f"kerasft: skipped {', '.join(titles)}: {reason}")
    for pair, checks in result.checks.items():
        bad = [c for c in checks if not c["ok"]]
        if not checks:
            print(f"kerasft: {pair}: no tolerance checks (nothing recorded "
                  "to compare)")
            continue
        print(f"kerasft: {pair}: {len(checks) - len(bad)}/{len(checks)} "
              f"tolerance checks pass ({checks[0]['tier']} tier: "
              f"{checks[0]['reason']})")
        for c in bad:
            print(f"kerasft:   FAILS {c['name']}: {c['value']:.3g} > "
                  f"{c['tolerance']:g} at {c['where']}")
    if result.failed:
        print(f"kerasft: FAILED: {len(result.failed)} tolerance check(s) "
              "failed" + ("" if args.check else
                          " (exit status 0; use --check to exit 1)"))
    if args.check and result.unchecked:
        # nothing checked is not a pass: a CI job comparing runs that do not
        # share a start must not go green
        print(f"kerasft: FAILED: --check: {len(result.unchecked)} pair(s) "
              "have no tolerance checks: "
              + "; ".join(result.unchecked))
    print(f"kerasft: comparison: {result.index}")
    if args.open:
        import webbrowser

        webbrowser.open(result.index.resolve().as_uri())
    return 1 if args.check and (result.failed or result.unchecked) else 0


def _init_weights(value: str) -> str:
    """The weights file behind --init-from (a run directory or a file)."""
    path = Path(os.path.expanduser(value))
    if path.is_dir():
        file = path / "initial.weights.h5"
        if not file.is_file():
            raise ConfigError(
                "--init-from: expected a run directory holding "
                f"initial.weights.h5, or a weights file. Received: {value!r} "
                "(a directory without initial.weights.h5)"
            )
        return str(file.resolve())
    if not path.is_file():
        raise ConfigError(
            "--init-from: expected a run directory or a weights file. "
            f"Received: {value!r} (no such file or directory)"
        )
    return str(path.resolve())


def _report(args: argparse.Namespace) -> int:
    from kerasft.render import RenderOptions, render_report

    report = render_report(
        args.run_dir,
        RenderOptions(
            all_layers=args.all_layers,
            embeddings_every_epoch=args.embeddings_every_epoch,
        ),
    )
    from kerasft.render.diagnose import summary_lines

    for line in summary_lines(report.findings):
        print(f"kerasft: {line}")
    for w in report.warnings:
        print(f"kerasft: warning: {w}")
    print(
        f"kerasft: report with {len(report.figures)} figures in "
        f"{report.seconds:.1f} s: {report.index}"
    )
    if args.open:
        import webbrowser

        webbrowser.open(report.index.resolve().as_uri())
    return 0


def _choose_backend(requested: str | None) -> None:
    if not requested:
        return
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != requested:
            raise ConfigError(
                f"--backend {requested}: Keras is already loaded with the "
                f"{keras.backend.backend()} backend in this process. Set "
                f"KERAS_BACKEND={requested} before starting Python instead."
            )
    os.environ["KERAS_BACKEND"] = requested


def _check_backend_installed() -> None:
    import importlib.util

    wanted = os.environ.get("KERAS_BACKEND", "tensorflow")
    if wanted not in BACKENDS:
        raise ConfigError(
            f"KERAS_BACKEND: expected one of {', '.join(BACKENDS)}. "
            f"Received: {wanted!r}"
        )
    if importlib.util.find_spec(wanted) is None:
        extra = {"tensorflow": "tensorflow"}.get(wanted, wanted)
        raise ConfigError(
            f"the {wanted} backend is selected (KERAS_BACKEND={wanted}) but "
            f"{wanted} is not installed. Install it "
            f"(pip install 'kerasft[{extra}]') or choose another with "
            "--backend or KERAS_BACKEND."
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the run stops as on Ctrl-C
    (status ``interrupted``, resumable)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler, `kill`) stops the run as Ctrl-C does: status
    "interrupted", resumable. Signal handlers live in the main thread."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _raise_terminated)
                if main_thread else None)
    try:
        yield
    finally:
        if main_thread:  # None: the handler was not set from Python
            signal.signal(signal.SIGTERM,
                          signal.SIG_DFL if previous is None else previous)


def _prepare_backend(cfg) -> None:
    """Checks the chosen backend is installed and sets it up for `cfg`."""
    _check_backend_installed()
    from kerasft import backend

    if cfg.train.deterministic and "keras" not in sys.modules:
        backend.prepare_determinism()
    backend.keep_tensorflow_unloaded()


def _study(args: argparse.Namespace) -> int:
    from kerasft.study import plan_study

    for flag, given in (("--plan", args.plan), ("--lr", args.lr),
                        ("--seed", args.seed)):
        if given is not None:
            raise ConfigError(
                f"study: {flag} sets one value; a study takes lists: "
                f"{flag}s. Received: {flag} {given}")
    path = resolve_config(args.config or DEFAULT_CONFIG)
    init_from = _init_weights(args.init_from) if args.init_from else None
    overrides = _overrides(args)
    _choose_backend(args.backend)
    # Everything checked before Keras loads or anything is written: every
    # variant's config, and a study folder holding another study.
    study = plan_study(path, args.plans, args.lrs, args.seeds, args.out,
                       overrides, init_from,
                       backend=os.environ.get("KERAS_BACKEND", "tensorflow"))
    _prepare_backend(study.base)
    from kerasft.study import run_study

    with _sigterm_interrupts():
        result = run_study(path, args.plans, args.lrs, args.seeds, study.out,
                           overrides, init_from, report=not args.no_report,
                           progress=lambda line: print(f"kerasft: {line}",
                                                       flush=True))
    for line in result.verdict:
        print(f"kerasft: {line}")
    if result.failed:
        print(f"kerasft: {len(result.failed)} variant(s) did not complete: "
              f"{', '.join(result.failed)}; run the same command again to "
              "continue them")
    print(f"kerasft: study page {result.index}")
    if args.open:
        import webbrowser

        webbrowser.open(result.index.resolve().as_uri())
    return 1 if result.failed else 0


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    return overrides


def _resume_config(args: argparse.Namespace):
    """The config a resume continues with, after the checks that need no
    framework; chooses the run's backend."""
    from kerasft.config import load_config
    from kerasft.rundir import read_json, resumable

    for flag, value in (("--init-from", args.init_from), ("--out", args.out)):
        if value:
            raise ConfigError(
                f"--resume continues the run in its own directory from its "
                f"checkpoint; {flag} cannot be used with it. Received: "
                f"{flag} {value}"
            )
    run_dir = Path(os.path.expanduser(args.resume))
    resumable(run_dir)
    path = resolve_config(args.config) if args.config else run_dir / "config.yaml"
    cfg = load_config(path, _overrides(args))
    env = run_dir / "env.json"
    ran_on = read_json(env).get("backend") if env.is_file() else None
    wanted = args.backend or os.environ.get("KERAS_BACKEND") or ran_on
    if ran_on and wanted != ran_on:
        raise ConfigError(
            f"--resume: {run_dir} was trained on the {ran_on} backend; it "
            f"resumes on the same one. Received: {wanted} (from "
            f"{'--backend' if args.backend else 'KERAS_BACKEND'}). Use "
            f"--backend {ran_on}."
        )
    _choose_backend(ran_on)
    return cfg, run_dir


def _train(args: argparse.Namespace) -> int:
    from kerasft.config import load_config
    from kerasft.rundir import check_parent

    if args.resume:
        cfg, resume = _resume_config(args)
        out = None
    else:
        check_parent(args.out or "runs")
        path = resolve_config(args.config or DEFAULT_CONFIG)
        overrides = _overrides(args)
        if args.init_from:
            overrides.append(f"model.weights={_init_weights(args.init_from)}")
        cfg = load_config(path, overrides)
        _choose_backend(args.backend)
        resume, out = None, args.out or "runs"
    _prepare_backend(cfg)
    from kerasft.train import train

    with _sigterm_interrupts():
        result = train(cfg, out=out, report=not args.no_report, resume=resume)
    acc = result.test.get("accuracy")
    print(
        f"kerasft: test accuracy {acc:.4f}, test loss "
        f"{result.test.get('loss', float('nan')):.4f} "
        f"(chance {1 / _num_classes(result):.4f}); "
        f"train accuracy in inference mode "
        f"{result.train_eval.get('accuracy', float('nan')):.4f}; "
        f"{result.seconds:.0f} s"
    )
    from kerasft.render.diagnose import summary_lines

    for line in summary_lines(result.findings):
        print(f"kerasft: {line}")
    for w in result.warnings:
        print(f"kerasft: warning: {w}")
    if result.report is not None:
        print(f"kerasft: report {result.report}")
    print(f"kerasft: run directory {result.run_dir}")
    return 0


def _start_weights(run_dir: str, index: int, phases: list) -> tuple[str, str]:
    """--from: the weights file phase `index` (0-based) starts from in
    that run, and its description."""
    from kerasft.rundir import checkpoint_file

    run = Path(os.path.expanduser(run_dir))
    if index == 0:
        file, what = run / "initial.weights.h5", "initial weights"
    else:
        epoch = sum(p.epochs for p in phases[:index])
        file = checkpoint_file(run / "checkpoints", epoch, "weights.h5")
        what = (f"weights at the end of phase {index} "
                f"({phases[index - 1].name}, epoch {epoch})")
    if not file.is_file():
        raise ConfigError(
            f"--from: expected a run directory holding {file.relative_to(run)}"
            f" (its {what}). Received: {run_dir!r}"
            + ("" if run.is_dir() else " (no such directory)"))
    return str(file), f"{run.name}'s {what}"


def _lr_find(args: argparse.Namespace) -> int:
    from kerasft.config import load_config
    from kerasft.rundir import check_parent, create_run_dir, write_json

    if args.from_run and args.init_from:
        raise ConfigError(
            "lr-find: --from and --init-from both choose the starting "
            f"weights; give one. Received: --from {args.from_run} "
            f"--init-from {args.init_from}")
    if args.from_run and not args.config:
        path = Path(os.path.expanduser(args.from_run)) / "config.yaml"
        if not path.is_file():
            raise ConfigError(
                "--from: expected a run directory with config.yaml. "
                f"Received: {args.from_run!r}")
    else:
        path = resolve_config(args.config or DEFAULT_CONFIG)
    overrides = _overrides(args)
    for flag, key in (("steps", "steps"), ("start_lr", "start_lr"),
                      ("end_lr", "end_lr")):
        if getattr(args, flag) is not None:
            overrides.append(f"lr_find.{key}={getattr(args, flag)}")
    if args.init_from:
        overrides.append(f"model.weights={_init_weights(args.init_from)}")
    cfg = load_config(path, overrides)
    from kerasft.model.plan import make_phases

    phases = make_phases(cfg.plan, cfg.train)
    if not 1 <= args.phase <= len(phases):
        raise ConfigError(
            f"--phase: expected 1 to {len(phases)} (the {cfg.plan.kind} "
            f"plan's phases: {', '.join(p.name for p in phases)}). "
            f"Received: {args.phase}")
    index = args.phase - 1
    if args.from_run:
        weights_file, weights = _start_weights(args.from_run, index, phases)
    else:
        weights_file = None
        weights = f"the config's initial weights (model.weights: {cfg.model.weights})"
        if index:
            weights += (f", not those phase {index} would leave; --from "
                        "RUN_DIR starts from a run's")
    out = check_parent(args.out or "lr_find")
    _choose_backend(args.backend)
    _prepare_backend(cfg)
    from kerasft import backend
    from kerasft.data import load_splits
    from kerasft.model import build_model
    from kerasft.render.lr_find import save_plot
    from kerasft.train.lr_find import phase_lr_find, result_name

    if cfg.train.deterministic:
        backend.enable_determinism()
    backend.seed_everything(cfg.seed)
    splits = load_splits(cfg.data, cfg.seed)
    model = build_model(cfg.model, splits.num_classes, cfg.data.image_size,
                        precision=cfg.train.precision, seed=cfg.seed)
    if weights_file:
        try:
            model.load_weights(weights_file)
        except (ValueError, KeyError) as e:
            raise ConfigError(
                f"--from: {weights_file} does not fit the config's model "
                f"({cfg.model.arch}, {splits.num_classes} classes): {e}. "
                "Leave --config out to use the run's own.") from None
    phase = phases[index]
    print(f"kerasft: LR range test for phase {args.phase} "
          f"({phase.describe()}) on {splits.description}, backend "
          f"{backend.name()}, from {weights}")
    result = phase_lr_find(cfg, model, splits, phase, index, weights,
                           verbose=True)
    if args.out is None:
        out = create_run_dir(out, f"{cfg.name}-phase-{args.phase}",
                             backend.name())
    out.mkdir(parents=True, exist_ok=True)
    stem = out / result_name(index, phase.name)
    write_json(stem.with_suffix(".json"), result.to_dict())
    save_plot(result.to_dict(), stem.with_suffix(".png"))
    print(f"kerasft: {len(result.losses)} steps in {result.seconds:.0f} s; "
          f"stopped: {result.stopped}")
    if result.suggestion is None:
        print(f"kerasft: {result.note}")
    else:
        print(f"kerasft: suggested learning rate for phase {args.phase} "
              f"({phase.name}): {result.suggestion:.3g} ({result.note})")
    print(f"kerasft: plot {stem.with_suffix('.png')}; numbers "
          f"{stem.with_suffix('.json')}")
    return 0


def _num_classes(result) -> int:
    from kerasft.rundir import read_json

    return len(read_json(result.run_dir / "data.json")["class_names"])


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code."""
    # TensorFlow (the tensorflow backend, tensorflow-datasets) logs its C++
    # start-up lines (oneDNN, cpu_feature_guard) at INFO/WARNING when it is
    # first imported; quiet them unless the user chose a level. Set here,
    # before anything can import TensorFlow.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "report":
            return _report(args)
        if args.command == "lr-find":
            return _lr_find(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "study":
            return _study(args)
        if args.command == "explain":
            return _explain(args)
    except KerasftError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("Error: terminated (SIGTERM). A run directory it had made is "
              "marked interrupted; continue it with kerasft train --resume "
              "RUN_DIR.", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("Error: interrupted.", file=sys.stderr)
        return 130
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
