"""`kerasft study`: run plan x learning rate x seed variants, then one page.

Every variant is an ordinary kerasft run, trained one after the other into
``<out>/runs/``. The study folder's ``study.json`` lists the variants, the
flags that made them and, per variant, its run directory and state, so the
same command run again skips the finished variants and continues the rest.

Same start: every variant of one seed starts from the same weights with no
file passed between them, because kerasft draws whatever ``model.weights``
does not load from numpy by the seed and the variable's path
(`kerasft.model.init`): a pretrained backbone (ImageNet, a file, a
pretraining run) with the seed's new head, or the seed's random network.
``--init-from`` gives every variant one weights file instead. The
``scratch`` plan is the baseline that does not transfer: the same network
from the seed's random start (``model.weights: none``), every layer and
BatchNorm training. Variants with different seeds start from their own
seed's start. The seed also picks the validation split, the
image caps, the data order and the probe set (`kerasft.data.load_splits`
is seeded by it), so variants of one seed see the same data and variants
of different seeds do not: the spread over seeds covers all of these.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kerasft.config import PLANS, RunConfig, load_config
from kerasft.errors import ConfigError, KerasftError, RunDirError
from kerasft.rundir import check_parent, read_json, read_status, write_json

log = logging.getLogger(__name__)

STUDY_FORMAT = 1
STUDY_FILE = "study.json"
# Plain names for the verdict and the page.
PLAN_NAMES = {
    "head": "linear probe (head only)",
    "phased": "phased fine-tuning (head, then top stages)",
    "full": "full fine-tuning",
    "scratch": "training from scratch (no transfer)",
}
# The config's plan kinds, plus the no-transfer baseline.
STUDY_PLANS = (*PLANS, "scratch")
# What makes a variant `scratch`: the seed's random network, all of it and
# BatchNorm training (model.bn_momentum stays the config's).
SCRATCH = ("plan.kind=full", "plan.batchnorm=train", "model.weights=none")


@dataclass(frozen=True)
class Variant:
    """One run of a study.

    Attributes:
        plan: ``plan.kind`` (`kerasft.config.PLANS`), or ``scratch``
            (`SCRATCH`).
        lr: the learning rate as given (``"1e-3"``, ``"auto"``), or None
            for the config's own.
        seed: the run's seed.
    """

    plan: str
    lr: str | None
    seed: int

    def label(self, lr_shown: str) -> str:
        """``head lr=1e-3 seed=0`` (`lr_shown` when `lr` is None)."""
        return f"{self.plan} lr={self.lr or lr_shown} seed={self.seed}"

    def overrides(self) -> list[str]:
        """The config overrides that make this variant."""
        out = (list(SCRATCH) if self.plan == "scratch"
               else [f"plan.kind={self.plan}"]) + [f"seed={self.seed}"]
        if self.lr is not None:
            out.append(f"optimizer.learning_rate={self.lr}")
        return out


@dataclass
class StudyPlan:
    """A validated study, before anything is trained or written.

    Attributes:
        out: the study folder.
        config: the config file.
        base: the config with the user's overrides (no variant's).
        variants: in training order: seed by seed, then plan, then rate.
        configs: each variant's validated config (its start not yet set).
        flags: what made the study; a rerun must give the same.
        lr_shown: the config's learning rate, for labels of `lr=None`.
        init_from: the weights file every variant but ``scratch`` starts
            from, or None (each seed's own start).
    """

    out: Path
    config: Path
    base: RunConfig
    variants: list[Variant]
    configs: list[RunConfig]
    flags: dict
    lr_shown: str
    init_from: str | None = None

    def label(self, i: int) -> str:
        return self.variants[i].label(self.lr_shown)


@dataclass
class StudyResult:
    """What `run_study` returns.

    Attributes:
        out: the study folder.
        index: the page, ``<out>/index.html``.
        rows: the page's table, one dict per (plan, learning rate)
            (`kerasft.study.page.table_rows`).
        run_dirs: each variant's run directory (None: it never started).
        failed: labels of the variants that did not complete.
        verdict: the page's plain-language verdict, one sentence a line.
    """

    out: Path
    index: Path
    rows: list[dict]
    run_dirs: list[Path | None]
    failed: list[str] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)


def _split(flag: str, text: str | list | tuple | None) -> list[str] | None:
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    items = [t.strip() for t in items]
    if not items or any(not t for t in items):
        raise ConfigError(
            f"{flag}: expected a comma-separated list without empty items. "
            f"Received: {text!r}")
    dup = sorted({t for t in items if items.count(t) > 1})
    if dup:
        raise ConfigError(
            f"{flag}: expected each value once. Received: {text!r} "
            f"({', '.join(dup)} repeated)")
    return items


def parse_plans(text) -> list[str]:
    """``head,full`` -> ``["head", "full"]``, each one of `STUDY_PLANS`."""
    plans = _split("--plans", text) or []
    bad = [p for p in plans if p not in STUDY_PLANS]
    if bad or not plans:
        raise ConfigError(
            f"--plans: expected a comma-separated list of plan kinds from "
            f"{', '.join(STUDY_PLANS)}. Received: {text!r}"
            + (f" ({', '.join(map(repr, bad))} unknown)" if bad else ""))
    return plans


def parse_lrs(text) -> list[str] | None:
    """``1e-3,1e-2`` -> the texts, each a positive number or ``auto``."""
    lrs = _split("--lrs", text)
    for t in lrs or []:
        if t == "auto":
            continue
        try:
            ok = float(t) > 0 and float(t) != float("inf")
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                "--lrs: expected a comma-separated list of positive "
                f"learning rates (or auto). Received: {text!r} ({t!r} is "
                "not one)")
    return lrs


def parse_seeds(text) -> list[int] | None:
    """``0,1,2`` -> ``[0, 1, 2]``."""
    seeds = _split("--seeds", text)
    if seeds is None:
        return None
    try:
        return [int(t) for t in seeds]
    except ValueError:
        raise ConfigError(
            "--seeds: expected a comma-separated list of integers. "
            f"Received: {text!r}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan_study(
    config: str | os.PathLike,
    plans,
    lrs=None,
    seeds=None,
    out: str | os.PathLike | None = None,
    overrides: list[str] | tuple = (),
    init_from: str | os.PathLike | None = None,
    backend: str | None = None,
) -> StudyPlan:
    """Validates a study without a framework and without writing anything.

    Every variant's config is built and validated, and a study folder that
    already holds a study is checked to hold this one.

    Args:
        config: the config file.
        plans: plan kinds, a list or ``"head,full"``.
        lrs: learning rates (texts or numbers), or None for the config's.
            Defaults to `None`.
        seeds: seeds, or None for the config's. Defaults to `None`.
        out: the study folder. Defaults to ``studies/<config name>``.
        overrides: ``key=value`` overrides for every variant. Defaults to
            none.
        init_from: a weights file every variant but ``scratch`` starts from
            (instead of each seed's own start). Defaults to `None`.
        backend: recorded with the flags (a study stays on one backend).
            Defaults to ``KERAS_BACKEND``, else tensorflow.

    Returns:
        A `StudyPlan`.

    Raises:
        ConfigError: a bad value, a variant whose config is invalid, or a
            study folder that holds a different study.
    """
    plans = parse_plans(plans)
    lrs = parse_lrs(lrs)
    seeds = parse_seeds(seeds)
    config = Path(config).resolve()
    overrides = list(overrides)
    if init_from is not None:
        init_from = str(Path(init_from).resolve())
        overrides.append(f"model.weights={init_from}")
    base = load_config(config, overrides)
    if out is None:
        out = Path("studies") / base.name
    out = check_parent(out)
    lr_shown = str(base.optimizer.learning_rate)
    variants = [Variant(p, lr, s)
                for s in (seeds if seeds is not None else [base.seed])
                for p in plans
                for lr in (lrs if lrs is not None else [None])]
    configs = []
    for v in variants:
        try:
            configs.append(load_config(
                config, overrides + v.overrides()
                + [f"name={base.name}-{v.plan}-lr{v.lr or lr_shown}"
                   f"-seed{v.seed}"]))
        except ConfigError as e:
            raise ConfigError(
                f"study variant {v.label(lr_shown)}: {e}") from None
    flags = {
        "config": str(config),
        "config_sha256": _sha256(config),
        "plans": plans,
        "lrs": lrs,
        "seeds": seeds,
        "overrides": list(overrides),
        "backend": backend or os.environ.get("KERAS_BACKEND", "tensorflow"),
    }
    study = StudyPlan(out, config, base, variants, configs, flags, lr_shown,
                      init_from)
    _check_same_study(study)
    return study


# How each flag is named when a rerun's differs from the folder's.
_FLAG_NAMES = {
    "config": "--config", "config_sha256": "the config file's contents",
    "plans": "--plans", "lrs": "--lrs", "seeds": "--seeds",
    "overrides": "the config flags (--set, --epochs, --init-from ...)",
    "backend": "the backend",
}


def _check_same_study(study: StudyPlan) -> None:
    path = study.out / STUDY_FILE
    if not path.exists():
        if study.out.exists() and any(study.out.iterdir()):
            raise ConfigError(
                f"--out: expected a new folder or a study folder (with "
                f"{STUDY_FILE}). Received: {str(study.out)!r} (it holds "
                "other files). Choose another --out.")
        return
    old = read_json(path).get("flags", {})
    for key, name in _FLAG_NAMES.items():
        if old.get(key) == study.flags[key]:
            continue
        what = ("changed since" if key == "config_sha256" else
                f"was {_flag_text(old.get(key))}, now "
                f"{_flag_text(study.flags[key])}")
        raise ConfigError(
            f"--out {study.out} holds a study made with other flags: "
            f"{name} {what}. Give another --out for a new study, or the "
            "same flags to continue that one.")


def _flag_text(value) -> str:
    if value is None:
        return "not given"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _state(study: StudyPlan) -> dict:
    """The folder's ``study.json``, or a fresh one."""
    path = study.out / STUDY_FILE
    if path.exists():
        return read_json(path)
    return {
        "format": STUDY_FORMAT,
        "flags": study.flags,
        "variants": [
            {"plan": v.plan, "lr": v.lr, "seed": v.seed,
             "label": study.label(i), "run_dir": None, "state": "pending",
             "attempts": []}
            for i, v in enumerate(study.variants)],
    }


def _new_dir(parent: Path, before: set) -> Path | None:
    """The run directory `kerasft.train` made in `parent` (None: none)."""
    if not parent.is_dir():
        return None
    made = [p for p in parent.iterdir() if p.is_dir() and p.name not in before]
    return max(made, key=lambda p: p.stat().st_mtime) if made else None


def _train_variant(study: StudyPlan, i: int, entry: dict, state: dict,
                   report: bool, say: Callable[[str], None]) -> None:
    """Trains (or continues) variant `i`; updates `entry` and `state`."""
    from kerasft.rundir import resumable
    from kerasft.train import train

    runs = study.out / "runs"
    cfg, resume = study.configs[i], None
    old = study.out / entry["run_dir"] if entry["run_dir"] else None
    if old is not None and old.is_dir():
        status = read_status(old)
        if status.get("state") == "running":  # alive: see read_status
            raise RunDirError(
                f"study variant {entry['label']}: {old} is being trained "
                f"by another process (pid {status.get('pid')} on "
                f"{status.get('host')}). Wait for it, or stop it and run "
                "this command again.")
        try:
            resumable(old)
            resume = old
            cfg = load_config(old / "config.yaml")
            say(f"study: {entry['label']}: continuing {entry['run_dir']} "
                "from its last checkpoint")
        except RunDirError as e:
            # no checkpoint to continue from: train it again, keeping the
            # failed attempt recorded
            say(f"study: {entry['label']}: {entry['run_dir']} cannot be "
                f"continued ({e}); training it again from the start")
            entry["attempts"].append({"run_dir": entry["run_dir"],
                                      "state": entry["state"],
                                      "error": entry.get("error")})
            entry["run_dir"] = None
    before = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
    entry.update(state="running", error=None)
    try:
        result = train(cfg, out=runs, report=report, resume=resume)
        run_dir, error = result.run_dir, None
        entry["state"] = "completed"
    except KerasftError as e:
        run_dir, error = resume or _new_dir(runs, before), str(e)
        entry.update(state="failed", error=f"{type(e).__name__}: {e}")
    except BaseException as e:
        run_dir = resume or _new_dir(runs, before)
        interrupted = isinstance(e, KeyboardInterrupt)
        entry.update(state="interrupted" if interrupted else "failed",
                     error=None if interrupted else f"{type(e).__name__}: {e}")
        _record(study, state, entry, run_dir)
        raise
    _record(study, state, entry, run_dir)
    if error:
        say(f"study: {entry['label']} failed: {error}")


def _record(study: StudyPlan, state: dict, entry: dict,
            run_dir: Path | None) -> None:
    if run_dir is not None:
        entry["run_dir"] = str(run_dir.relative_to(study.out))
    write_json(study.out / STUDY_FILE, state)


def run_study(
    config: str | os.PathLike,
    plans,
    lrs=None,
    seeds=None,
    out: str | os.PathLike | None = None,
    overrides: list[str] | tuple = (),
    init_from: str | os.PathLike | None = None,
    report: bool = True,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Trains every plan x learning rate x seed variant, then the page.

    Variants train one after the other from the same start per seed (see
    the module docstring). A folder that already holds this study is
    continued: completed variants are not trained again, interrupted or
    failed ones continue from their last checkpoint (or train again from
    the start, the failed attempt kept in ``study.json``). A variant that
    fails does not stop the study; the page shows it as failed.

    Args:
        config: a config file.
        plans: plan kinds (``"head,full"`` or a list).
        lrs: learning rates, or None for the config's. Defaults to `None`.
        seeds: seeds, or None for the config's. Defaults to `None`.
        out: the study folder. Defaults to ``studies/<config name>``.
        overrides: ``key=value`` config overrides for every variant.
            Defaults to none.
        init_from: a weights file (or run directory) every variant starts
            from. Defaults to `None` (each seed's own start: see the module
            docstring).
        report: render each run's own report. Defaults to `True`.
        progress: called with one line per step of the study. Defaults to
            logging at INFO.

    Returns:
        A `StudyResult`.

    Example:

    ```python
    from kerasft.study import run_study

    result = run_study("configs/quickstart.yaml", "head,full",
                       seeds=[0, 1], overrides=["train.epochs=2"])
    for row in result.rows:
        print(row["plan"], row["lr"], row["test_acc"])
    print(result.index)
    ```
    """
    import keras

    from kerasft.study.page import write_page

    say = progress or log.info
    if init_from is not None and Path(init_from).is_dir():
        init_from = Path(init_from) / "initial.weights.h5"
    study = plan_study(config, plans, lrs, seeds, out, overrides, init_from,
                       backend=keras.backend.backend())
    study.out.mkdir(parents=True, exist_ok=True)
    state = _state(study)
    write_json(study.out / STUDY_FILE, state)
    n = len(study.variants)
    for i, entry in enumerate(state["variants"]):
        run_dir = study.out / entry["run_dir"] if entry["run_dir"] else None
        if run_dir is not None and read_status(run_dir).get(
                "state") == "completed":
            if entry["state"] != "completed":
                entry["state"] = "completed"
                write_json(study.out / STUDY_FILE, state)
            say(f"study: variant {i + 1}/{n} {entry['label']}: done "
                f"({run_dir.name}), not trained again")
            continue
        say(f"study: variant {i + 1}/{n} {entry['label']} ...")
        _train_variant(study, i, entry, state, report, say)
    run_dirs = [study.out / e["run_dir"] if e["run_dir"] else None
                for e in state["variants"]]
    failed = [e["label"] for e in state["variants"]
              if e["state"] != "completed"]
    say("study: writing the page")
    page = write_page(study, state)
    return StudyResult(study.out, page.index, page.rows, run_dirs, failed,
                       page.verdict)
