"""Train NViR on a lab's own labelled images with the paper's recipe.

Recipe (defaults): MSE loss, AdamW (lr 1e-4, weight decay 5e-4),
ReduceLROnPlateau on the validation loss (factor 0.5, patience 15), up to 150
epochs with early stopping (patience 30 epochs without a better validation
loss), batch 32, the paper's augmentations, ImageNet initialisation. The best
epoch (lowest validation loss) is what the model file keeps, or with
``keep="last"`` the last one (for a fixed schedule whose validation images
cannot judge what matters, e.g. robustness to conditions they lack).

Every epoch writes ``OUT.resume`` (weights, optimizer, scheduler, RNG state,
history); ``resume=True`` continues from it, and it is deleted when the run
finishes. Batch order and augmentations depend only on (seed, epoch, image),
so an interrupted and resumed run gives the same model as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nvir_agent import __version__
from nvir_agent.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    TrainingInterrupted,
)
from nvir_agent.model.modelfile import load_model, save_model
from nvir_agent.model.network import build_nvir
from nvir_agent.model.network import members as network_members
from nvir_agent.model.preprocess import PreprocessSpec
from nvir_agent.paths import user_cache_dir
from nvir_agent.training import hardware
from nvir_agent.training.augment import AugmentSettings
from nvir_agent.training.data import epoch_batches, prepare_crops, split_arrays, split_labels
from nvir_agent.training.evaluate import metrics_report, predict
from nvir_agent.training.labels import read_labels
from nvir_agent.training.summarise import summarise_trained

log = logging.getLogger(__name__)

IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_URL = "https://download.pytorch.org/models/" + IMAGENET_FILE
RESUME_SUFFIX = ".resume"
NEW_PERCENTILE_SIDE = 64  # a new model's percentiles come from its crop reduced to 64 × 64
MAX_ENSEMBLE = 16
CALIBRATION_IMAGES = 1024  # training images used to calibrate the output after each epoch
# options that may change between an interrupted run and its resumption
_RESUMABLE_CHANGES = {"epochs", "resume", "workers", "stop_after", "device", "cache_dir", "out",
                      "keep"}


@dataclass
class TrainOptions:
    """Everything ``nvir-agent train`` can set; defaults are the paper's recipe."""

    labels: Path
    out: Path
    images: Path | None = None
    epochs: int = 150
    batch_size: int = 32
    seed: int = 42
    size: int | None = None  # default: the init model's, else 256
    crop: str | None = None  # default: the init model's, else center-square
    margin: float | None = None
    intensity: str | None = None  # default: the init model's, else bitdepth
    percentile_side: int | None = None  # default: the init model's, else 64 (see PreprocessSpec)
    split: str = "chronological"
    val_fraction: float = 0.2
    init: str = "imagenet"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lr_factor: float = 0.5
    lr_patience: int = 15
    patience: int = 30
    keep: str = "best"  # which epoch the model file holds: best (lowest validation loss) or last
    calibrate: bool = True  # rescale the output layer after each epoch (see output_calibration)
    augment: str = "paper"  # paper, geometric (flips/rotations only) or none
    blur: float = 0.0  # extra defocus augmentation (max sigma / crop side); 0 = the paper's set
    noise: float = 0.0  # extra Gaussian noise augmentation (max std / 255); 0 = the paper's set
    label_source: str = "auto"
    workers: int = 1
    device: str = "auto"
    precision: str = "auto"
    save_dtype: str = "float32"
    cache_dir: Path | None = None
    resume: bool = False
    stop_after: int | None = None  # end this run after so many epochs, keeping the checkpoint
    summary: bool = True  # store the training-image summary and calibrate intervals (see summarise)
    ensemble: int = 1  # networks trained from seeds seed, seed + 1, … (training/ensemble.py)

    def recipe(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        for k in ("out", "resume", "stop_after", "cache_dir", "workers", "summary"):
            d.pop(k, None)
        return d


@dataclass
class Progress:
    """One progress event: ``phase`` is ``prepare`` (images read), ``batch`` or ``epoch``."""

    phase: str
    done: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    val_r2: float | None = None
    val_mae: float | None = None
    lr: float | None = None
    best_epoch: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    member: int = 0  # which network of an ensemble (0-based) …
    members: int = 1  # … of how many


@dataclass
class TrainResult:
    path: Path | None
    epochs_run: int
    best_epoch: int
    stopped: str  # "early-stopping", "max-epochs" or "paused"
    validation: dict[str, Any]  # of the epoch the file holds
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    images_per_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    saved_epoch: int = 0  # the epoch the file holds: best_epoch, or the last with keep="last"
    members: list[TrainResult] = field(default_factory=list)  # an ensemble's, in seed order


def resume_path(out: Path) -> Path:
    return Path(str(out) + RESUME_SUFFIX)


def imagenet_weights_path() -> Path:
    """Where torchvision keeps ResNet18's ImageNet weights (never downloaded here)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def initial_network(init: str, member: int = 0, members: int = 1
                    ) -> tuple[nn.Module, PreprocessSpec | None, str]:
    """The starting network for ``init`` (imagenet, none, or a file), the spec of
    an init model file, and a description for the provenance. ``member`` of
    ``members``: an ensemble's network, which starts from the same member of an
    ensemble model file (one network's file starts every member)."""
    if init == "none":
        return build_nvir(), None, "random initialisation"
    if init == "imagenet":
        path = imagenet_weights_path()
        if not path.is_file():
            raise ModelLoadError(
                f"ResNet18 ImageNet weights are not available offline (expected {path})",
                f"download {IMAGENET_URL} on a connected machine and copy it to {path} "
                "(or pass --init PATH/to/resnet18.pth), or train from scratch with --init none",
            )
        return build_nvir(_load_resnet_state(path)), None, f"ImageNet ResNet18 ({path.name})"
    path = Path(init)
    if not path.is_file():
        raise DataError(f"--init {init}: no such file",
                        "use imagenet, none, an NViR model file (.safetensors) or "
                         "ResNet18 ImageNet weights (.pth)")
    if path.suffix in (".pth", ".pt"):
        return build_nvir(_load_resnet_state(path)), None, f"ImageNet ResNet18 ({path.name})"
    loaded = load_model(path)
    source = loaded.metadata.get("provenance", {}).get("source", "unknown")
    nets = network_members(loaded.module)
    if len(nets) > 1 and len(nets) != members:
        raise ConfigError(
            f"--init {init} is an ensemble of {len(nets)} networks; fine-tuning it needs "
            f"--ensemble {len(nets)}" + (f", not {members}" if members > 1 else ""),
            f"add --ensemble {len(nets)} (each network starts from the same member of {path.name})")
    module = nets[member] if len(nets) > 1 else loaded.module
    return module, loaded.spec, f"fine-tuned from {loaded.name} ({source})"


def _load_resnet_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError("the file does not hold a state dict")
        build_nvir(state)  # checks keys and shapes
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"{path} is not usable as ResNet18 ImageNet weights: {exc}",
                             f"use torchvision's {IMAGENET_FILE} ({IMAGENET_URL})") from exc
    return state


def resolve_spec(options: TrainOptions, init_spec: PreprocessSpec | None) -> PreprocessSpec:
    base = init_spec or PreprocessSpec(intensity="bitdepth")
    side = options.percentile_side
    if side is None and init_spec is None and options.intensity == "percentile":
        side = NEW_PERCENTILE_SIDE
    changes = {k: v for k, v in (("size", options.size), ("crop", options.crop),
                                 ("margin", options.margin), ("intensity", options.intensity),
                                 ("percentile_side", side))
               if v is not None}
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise ConfigError(str(exc), "see nvir-agent train --help for the allowed values") from exc


def check_options(o: TrainOptions) -> None:
    problems = []
    if o.epochs < 1:
        problems.append(f"--epochs {o.epochs} must be at least 1")
    if o.batch_size < 2:
        problems.append(f"--batch-size {o.batch_size} must be at least 2 (BatchNorm)")
    if not o.lr > 0:
        problems.append(f"--lr {o.lr} must be > 0")
    if o.weight_decay < 0:
        problems.append(f"--weight-decay {o.weight_decay} must be ≥ 0")
    if o.augment not in ("paper", "geometric", "none"):
        problems.append(f"--augment {o.augment} is not paper, geometric or none")
    if not 0 <= o.blur <= 0.2:
        problems.append(f"--augment-blur {o.blur} must be between 0 and 0.2")
    if not 0 <= o.noise <= 0.2:
        problems.append(f"--augment-noise {o.noise} must be between 0 and 0.2")
    if o.patience < 1 or o.lr_patience < 0:
        problems.append("--patience must be ≥ 1 and --lr-patience ≥ 0")
    if not 1 <= o.ensemble <= MAX_ENSEMBLE:
        problems.append(f"--ensemble {o.ensemble} must be between 1 and {MAX_ENSEMBLE}")
    if problems:
        raise ConfigError("; ".join(problems))


def train(options: TrainOptions, progress: Callable[[Progress], None] | None = None
          ) -> TrainResult:
    """Run the recipe for one network and write the model file (see module doc).
    An ensemble (``options.ensemble`` > 1) is trained by
    :func:`nvir_agent.training.ensemble.train_model`."""
    check_options(options)
    if options.ensemble != 1:
        raise ConfigError(f"train() trains one network, not an ensemble of {options.ensemble}",
                          "use nvir_agent.training.ensemble.train_model")
    started = time.monotonic()
    notify = progress or (lambda p: None)
    ckpt_path = resume_path(options.out)
    checkpoint = _read_checkpoint(ckpt_path, options)
    data = prepare(options, notify)
    module, result = fit(options, data, data.module, notify, started, ckpt_path, checkpoint)
    if result.stopped == "paused":
        return result
    meta = metadata(options, data, result)
    result.path = save_model(options.out, module.cpu(), data.spec, meta,
                             dtype=options.save_dtype)
    result.metadata = meta
    if options.summary:
        summarise(result.path, data)
    ckpt_path.unlink(missing_ok=True)
    log.info("wrote %s (epoch %d, best epoch %d, validation R² %s, MAE %s)", result.path,
             result.saved_epoch, result.best_epoch, result.validation.get("r2"),
             result.validation.get("mae"))
    return result


@dataclass
class TrainingData:
    """The labelled images read, split and preprocessed once, the starting network
    (of the first member) and where training runs."""

    labels: Any
    split: Any
    crops: Any
    spec: PreprocessSpec
    init_text: str
    module: nn.Module
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_items: list[Any]
    device: torch.device
    bf16: bool


def prepare(options: TrainOptions, notify: Callable[[Progress], None]) -> TrainingData:
    """Read the labels, build the starting network (seeded by ``options.seed``), split
    and preprocess the images."""
    labels = read_labels(options.labels, options.images, label_source=options.label_source)
    torch.manual_seed(options.seed)
    module, init_spec, init_text = initial_network(options.init, 0, options.ensemble)
    spec = resolve_spec(options, init_spec)
    split = split_labels(labels, options.split, val_fraction=options.val_fraction,
                         seed=options.seed)
    cache = options.cache_dir or user_cache_dir() / "crops"
    crops = prepare_crops(labels, spec, cache_dir=cache, workers=options.workers,
                          progress=lambda d, t: notify(Progress("prepare", d, t)))
    x_train, y_train, _ = split_arrays(crops, labels, split.train)
    x_val, y_val, val_idx = split_arrays(crops, labels, split.val)
    if len(x_train) < 2 or len(x_val) < 1:
        raise DataError(
            f"after leaving out unusable images, {len(x_train)} training and {len(x_val)} "
            "validation images remain", "label more images, or choose another --split")
    val_items = [labels.items[i] for i in val_idx]
    device = hardware.pick_device(options.device)
    bf16 = hardware.use_bf16(device, options.precision)
    return TrainingData(labels, split, crops, spec, init_text, module, x_train, y_train,
                        x_val, y_val, val_items, device, bf16)


def fit(options: TrainOptions, data: TrainingData, module: nn.Module,
        notify: Callable[[Progress], None], started: float, ckpt_path: Path | None,
        checkpoint: dict[str, Any] | None, *, member: int = 0, members: int = 1
        ) -> tuple[nn.Module, TrainResult]:
    """Train ``module`` with the recipe (seeded by ``options.seed``) and return it
    holding the epoch the file keeps, with the result. ``ckpt_path`` None: no resume
    checkpoint is written (an ensemble's members)."""
    spec, device, bf16 = data.spec, data.device, data.bf16
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    val_items = data.val_items

    def tell(p: Progress) -> None:
        notify(replace(p, member=member, members=members))

    cal = np.random.default_rng([options.seed, 0]).permutation(len(x_train))[:CALIBRATION_IMAGES]
    x_cal, y_cal = x_train[np.sort(cal)], y_train[np.sort(cal)]

    module = module.to(device)
    if bf16:
        module = module.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(module.parameters(), lr=options.lr,
                                  weight_decay=options.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=options.lr_factor, patience=options.lr_patience)
    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0,
             "history": [], "best_state": None, "train_s": 0.0, "wall_s": 0.0}
    if checkpoint is not None:
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        state.update(checkpoint["state"])
        log.info("resuming %s after epoch %d", options.out, state["epoch"])
    else:
        torch.manual_seed(options.seed)
    log.info("training on %d images, validating on %d (%s split), %s, device %s%s",
             len(x_train), len(x_val), options.split, spec.describe(), device,
             " with bf16 autocast" if bf16 else "")

    loss_fn = nn.MSELoss()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    pool = ThreadPoolExecutor(options.workers) if options.workers > 1 else None
    run_start = time.monotonic()
    epochs_this_run = 0
    stopped = "max-epochs"
    try:
        while state["epoch"] < options.epochs:
            epoch = state["epoch"] + 1
            t0 = time.monotonic()
            module.train()
            losses, seen = [], 0
            steps = max(1, -(-len(x_train) // options.batch_size))
            for step, (xb, yb) in enumerate(epoch_batches(
                    x_train, y_train, spec, batch_size=options.batch_size, seed=options.seed,
                    epoch=epoch, augmented=options.augment != "none", pool=pool,
                    settings=AugmentSettings(blur=options.blur, noise=options.noise,
                                             intensity=options.augment == "paper")),
                    start=1):
                x = torch.from_numpy(xb).to(device)
                if bf16:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(yb).to(device)
                optimizer.zero_grad(set_to_none=True)
                with hardware.autocast(device, bf16):
                    out = module(x).float().reshape(-1)
                loss = loss_fn(out, y)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()) * len(yb))
                seen += len(yb)
                tell(Progress("batch", step, steps, epoch, options.epochs))
            train_s = time.monotonic() - t0
            scale, shift = 1.0, 0.0
            if options.calibrate:
                scale, shift = output_calibration(
                    predict(module, x_cal, spec, batch_size=max(options.batch_size, 64),
                            device=device, bf16=bf16), y_cal)
            pred = scale * predict(module, x_val, spec, batch_size=max(options.batch_size, 64),
                                   device=device, bf16=bf16) + shift
            val_loss = float(np.mean((pred - y_val) ** 2))
            report = metrics_report(val_items, y_val, pred)
            scheduler.step(val_loss)
            state.update(last_calibration=[scale, shift], last_report=report)
            improved = val_loss < state["best_loss"]
            if improved:
                state.update(best_loss=val_loss, best_epoch=epoch, bad_epochs=0,
                             best_state=fold_calibration(_cpu_state(module), scale, shift),
                             best_report=report)
            else:
                state["bad_epochs"] += 1
            lr = optimizer.param_groups[0]["lr"]
            state["epoch"] = epoch
            state["train_s"] += train_s
            state["images_seen"] = state.get("images_seen", 0) + seen
            state["history"].append({
                "epoch": epoch, "train_loss": round(sum(losses) / max(seen, 1), 6),
                "val_loss": round(val_loss, 6), "val_r2": report["r2"], "val_mae": report["mae"],
                "lr": lr, "output_scale": round(scale, 5), "output_shift": round(shift, 5),
                "seconds": round(time.monotonic() - t0, 2)})
            epochs_this_run += 1
            elapsed = time.monotonic() - run_start
            per_epoch = elapsed / epochs_this_run
            if ckpt_path is not None:
                _write_checkpoint(ckpt_path, options, module, optimizer, scheduler, state,
                                  state["wall_s"] + time.monotonic() - started)
            tell(Progress("epoch", epoch, options.epochs, epoch, options.epochs,
                            state["history"][-1]["train_loss"], val_loss, report["r2"],
                            report["mae"], lr, state["best_epoch"], elapsed,
                            per_epoch * (options.epochs - epoch)))
            if state["bad_epochs"] >= options.patience:
                stopped = "early-stopping"
                log.info("early stopping after epoch %d (best epoch %d)", epoch,
                         state["best_epoch"])
                break
            if options.stop_after is not None and epochs_this_run >= options.stop_after \
                    and epoch < options.epochs:
                stopped = "paused"
                break
    except KeyboardInterrupt as exc:
        raise TrainingInterrupted(
            f"training interrupted after epoch {state['epoch']}",
            f"continue with the same command plus --resume (checkpoint {ckpt_path})"
            if ckpt_path is not None else
            "train again: an ensemble's training cannot be resumed") from exc
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if pool is not None:
            pool.shutdown()

    wall = state["wall_s"] + time.monotonic() - started
    ips = state.get("images_seen", 0) / state["train_s"] if state["train_s"] else 0.0
    last = options.keep == "last"
    result = TrainResult(None, state["epoch"], state["best_epoch"], stopped,
                         state.get("last_report" if last else "best_report", {}),
                         state["history"], wall, ips,
                         saved_epoch=state["epoch"] if last else state["best_epoch"])
    if stopped == "paused":
        return module, result
    if last:
        module.load_state_dict(fold_calibration(_cpu_state(module), *state["last_calibration"]))
    else:
        module.load_state_dict(state["best_state"])
    return module, result


def metadata(options: TrainOptions, data: TrainingData, result: TrainResult) -> dict[str, Any]:
    """The model file's metadata for a run (see :func:`_metadata`)."""
    return _metadata(options, data.labels, data.split, data.crops, len(data.x_train),
                     len(data.x_val), data.spec, data.init_text, result,
                     hardware.describe(data.device, data.bf16))


def summarise(path: Path, data: TrainingData) -> None:
    """Store the training-image summary and the interval calibration in ``path`` (on the
    validation images); a failure is logged, the model file stays as it is. Torch's
    thread count, which the scorer sets, is restored (later training in this process
    would otherwise reduce in another order and give other weights)."""
    threads = torch.get_num_threads()
    try:
        summarise_trained(path, [data.labels.items[i] for i in data.split.train],
                          data.val_items)
    except (DataError, ValueError) as exc:
        log.warning("no training-image summary stored in %s: %s", path, exc)
    finally:
        torch.set_num_threads(threads)


def output_calibration(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares (scale, shift) so that scale·pred + shift fits ``target``.

    The paper's head applies dropout (0.3) after every layer, the last one
    included; in eval mode, without dropout, its outputs come out compressed and
    shifted against what training optimised. Fitting an affine map of the
    eval-mode outputs on training images (never validation images) and folding
    it into the final linear layer removes that bias without changing the
    architecture. Returns (1, 0) when the outputs do not vary.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.size < 2 or float(p.std()) < 1e-6:
        return 1.0, 0.0
    scale, shift = np.polyfit(p, t, 1)
    return float(scale), float(shift)


def fold_calibration(state: dict[str, torch.Tensor], scale: float, shift: float
                     ) -> dict[str, torch.Tensor]:
    """The state dict with scale·y + shift folded into the output layer."""
    if scale == 1.0 and shift == 0.0:
        return state
    state = dict(state)
    weight, bias = state["regression_head.1.weight"], state["regression_head.1.bias"]
    state["regression_head.1.weight"] = weight * scale
    state["regression_head.1.bias"] = bias * scale + shift
    return state


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _metadata(options: TrainOptions, labels: Any, split: Any, crops: Any, n_train: int,
              n_val: int, spec: PreprocessSpec, init_text: str, result: TrainResult,
              hw: dict[str, Any]) -> dict[str, Any]:
    data = labels.summary()
    data.update(n_train=n_train, n_val=n_val, n_skipped=len(crops.skipped))
    return {
        "provenance": {
            "source": f"trained with nvir-agent train on {Path(options.labels).name}",
            "trained_from": init_text,
            "by": f"nvir-agent {__version__}",
            "hardware": hw,
            "wall_time_s": round(result.wall_s, 1),
            "train_images_per_s": round(result.images_per_s, 2),
        },
        "metrics": {"validation": result.validation, "saved_epoch": result.saved_epoch,
                    "kept": options.keep, "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run, "stopped": result.stopped},
        "data": data,
        "split": split.details,
        "recipe": {**options.recipe(), "preprocessing": spec.to_dict(),
                   "loss": "mse", "optimizer": "AdamW",
                   "scheduler": "ReduceLROnPlateau(val_loss)",
                   "augmentations": options.augment
                   + (f" + defocus blur ≤ {options.blur:g}" if options.blur else "")
                   + (f" + noise ≤ {options.noise:g}" if options.noise else "")},
        "history": result.history,
    }


def _fingerprint(options: TrainOptions) -> dict[str, Any]:
    d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    if d.get("ensemble") == 1:
        d.pop("ensemble")  # as in checkpoints written before ensembles existed
    return {k: v for k, v in d.items() if k not in _RESUMABLE_CHANGES}


def _read_checkpoint(path: Path, options: TrainOptions) -> dict[str, Any] | None:
    if not options.resume:
        if path.exists():
            raise ConfigError(
                f"{path} holds an interrupted training run for {options.out}",
                "add --resume to continue it, or delete the file to start over")
        return None
    if not path.is_file():
        log.warning("no interrupted run to resume (%s); starting from epoch 1", path)
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read the resume checkpoint {path}: {exc}",
                        "delete it and train again without --resume") from exc
    before = ckpt.get("options", {})
    now = _fingerprint(options)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"--resume with different settings than the interrupted run: {', '.join(changed)}",
            "use the same options as before (only --epochs, --workers and --device may change), "
            f"or delete {path} to start over")
    return ckpt


def _write_checkpoint(path: Path, options: TrainOptions, module: nn.Module,
                      optimizer: torch.optim.Optimizer, scheduler: Any,
                      state: dict[str, Any], wall: float) -> None:
    payload = {
        "options": _fingerprint(options),
        "model": _cpu_state(module),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "state": {**copy.copy(state), "wall_s": wall},
    }
    tmp = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"cannot write the resume checkpoint {path}: {exc.strerror or exc}",
                        "choose an --out folder you may write to, with enough free space"
                        ) from exc
