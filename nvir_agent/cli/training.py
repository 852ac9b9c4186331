"""Training commands: ``train`` (the paper's recipe on a lab's labelled images)
and ``evaluate`` (R²/MAE overall, per site and per day, optional scatter plot
and classic-feature baseline)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an NViR model on labelled images (the paper's recipe)",
        description="Train NViR (ResNet18 + MLP head) to read viability from bright-field "
        "images. The labels CSV names each image and gives 'viability' or raw 'atp' with "
        "plate, day and role (each well is divided by the median of the vehicle wells of its "
        "plate and day). Defaults are the paper's recipe.")
    p.add_argument("--labels", required=True, type=Path, metavar="CSV", help="labels CSV")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="folder the image paths are relative to (default: the CSV's folder)")
    p.add_argument("--out", required=True, type=Path, metavar="MODEL",
                   help="model file to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=150, help="maximum epochs (default 150)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--size", type=int, help="input size in pixels (default 256, or the "
                   "--init model's)")
    p.add_argument("--crop", choices=("center-square", "spheroid"),
                   help="centre square of the frame (the paper) or a square around the "
                   "segmented spheroid (default center-square, or the --init model's)")
    p.add_argument("--margin", type=float, help="spheroid crop margin per side, as a fraction "
                   "of the spheroid's size (default 0.25)")
    p.add_argument("--intensity", choices=("uint8", "bitdepth", "percentile"),
                   help="8-bit mapping: uint8 (the paper: 16-bit divided by 256), bitdepth "
                   "(default: full scale of the real bit depth) or percentile")
    p.add_argument("--percentile-side", type=int, metavar="N",
                   help="percentile intensity: take the percentiles from the crop reduced to "
                   "N × N, so that pixel noise does not lower the contrast (default 64 for a "
                   "new model, or the --init model's; 0: from every pixel)")
    p.add_argument("--split", default="chronological", metavar="chronological|random|site:NAME",
                   help="validation split (default chronological: the latest batches of each "
                   "site are held out)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of batches (or images) held out (default 0.2)")
    p.add_argument("--init", default="imagenet", metavar="imagenet|none|PATH",
                   help="ImageNet weights from the offline torch cache (default), random, an "
                   "NViR model file to fine-tune, or ResNet18 weights (.pth)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    p.add_argument("--lr-patience", type=int, default=15,
                   help="epochs without improvement before the learning rate halves (15)")
    p.add_argument("--patience", type=int, default=30,
                   help="epochs without improvement before training stops early (30)")
    p.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train N networks from seeds SEED, SEED+1, … (the paper's deep "
                   "ensemble) and write them as one model file: the viability is their mean "
                   "and the 90%% interval comes from their spread and MC dropout, calibrated "
                   "on the validation images. N times the training time; not resumable "
                   "(default 1: one network)")
    p.add_argument("--no-summary", action="store_true",
                   help="do not store the training-image summary (the out-of-distribution "
                   "check) nor calibrate intervals on the validation images")
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="which epoch the model file holds: the one with the lowest validation "
                   "loss (default) or the last one (for a fixed schedule whose validation set "
                   "cannot judge what matters, e.g. robustness to conditions it lacks)")
    p.add_argument("--augment-noise", type=float, default=0.0, metavar="F",
                   help="also add Gaussian noise with std up to F × 255, p = 0.5 (default 0)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep the raw output layer (default: after each epoch, rescale it by "
                   "least squares on training images, which removes the bias that the "
                   "head's dropout leaves in eval mode)")
    p.add_argument("--augment", choices=("paper", "geometric", "none"), default="paper",
                   help="the paper's augmentations (default), flips/rotations only, or none")
    p.add_argument("--augment-blur", type=float, default=0.0, metavar="F",
                   help="also blur (defocus) with sigma up to F × the crop side, p = 0.5 "
                   "(default 0: the paper's augmentations only)")
    p.add_argument("--labels-from", choices=("auto", "viability", "atp"), default="auto",
                   help="use the 'viability' column or normalise raw ATP (default auto)")
    p.add_argument("--workers", type=int, default=1, help="threads for reading and augmenting")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16")
    p.add_argument("--save-dtype", choices=("float32", "float16"), default="float32",
                   help="weights precision in the model file (float16 halves its size)")
    p.add_argument("--cache-dir", type=Path, help="where preprocessed crops are cached")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from MODEL.resume")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N epochs in this run, keeping MODEL.resume for --resume")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="compare a model's viability with labelled images (R², MAE)",
        description="Score labelled images with a model and report R² and MAE overall, per "
        "site and per day.")
    e.add_argument("--model", required=True, type=Path, metavar="MODEL", help="model file")
    e.add_argument("--labels", required=True, type=Path, metavar="CSV", help="labels CSV")
    e.add_argument("--images", type=Path, metavar="DIR",
                   help="folder the image paths are relative to (default: the CSV's folder)")
    e.add_argument("--labels-from", choices=("auto", "viability", "atp"), default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--plot", type=Path, metavar="PNG", help="write a predicted-vs-true plot")
    e.add_argument("--predictions", type=Path, metavar="CSV",
                   help="write one row per image: label, prediction and error")
    e.add_argument("--baseline", action="store_true",
                   help="also fit the classic-feature baseline on the model's training split "
                   "and report it side by side")
    e.add_argument("--train-labels", type=Path, metavar="CSV",
                   help="training labels for --baseline (default: those the model records)")
    e.add_argument("--train-images", type=Path, metavar="DIR")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.set_defaults(func=cmd_evaluate)


class ProgressPrinter:
    """Training progress on stderr: one updating line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_prepare = 0.0

    def __call__(self, p: Any) -> None:
        if p.phase == "prepare":
            now = time.monotonic()
            if p.done == p.total or (self.tty and now - self.last_prepare > 0.2):
                self.last_prepare = now
                line = f"preparing images {p.done}/{p.total}"
                if self.tty:
                    self._tty(line, end=p.done == p.total)
                elif p.done == p.total:
                    print(line, file=self.stream, flush=True)
        elif p.phase == "batch" and self.tty:
            self._tty(f"{_member(p)}epoch {p.epoch}/{p.epochs} "
                      f"{_bar(p.done / max(p.total, 1))} batch {p.done}/{p.total}")
        elif p.phase == "epoch":
            line = (f"{_member(p)}epoch {p.epoch}/{p.epochs} "
                    f"{_bar(p.epoch / max(p.epochs, 1))} "
                    f"train loss {p.train_loss:.4f}  val loss {p.val_loss:.4f}  "
                    f"val R² {_num(p.val_r2)}  MAE {_num(p.val_mae)}  lr {p.lr:.1e}  "
                    f"best {p.best_epoch}  left ≤{_duration(p.eta_s)}")
            if self.tty:
                self._tty(line, end=True)
            else:
                print(line, file=self.stream, flush=True)

    def _tty(self, line: str, end: bool = False) -> None:
        self.stream.write("\r\x1b[2K" + line + ("\n" if end else ""))
        self.stream.flush()


def _member(p: Any) -> str:
    return f"network {p.member + 1}/{p.members}: " if getattr(p, "members", 1) > 1 else ""


def _bar(frac: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, frac)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_train(args: argparse.Namespace) -> int:
    from nvir_agent.training.ensemble import train_model
    from nvir_agent.training.train import TrainOptions

    options = TrainOptions(
        labels=args.labels, images=args.images, out=args.out, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, size=args.size, crop=args.crop,
        margin=args.margin, intensity=args.intensity, percentile_side=args.percentile_side,
        split=args.split,
        val_fraction=args.val_fraction, init=args.init, lr=args.lr,
        weight_decay=args.weight_decay, lr_patience=args.lr_patience, patience=args.patience,
        keep=args.keep, augment=args.augment, calibrate=not args.no_calibrate, blur=args.augment_blur,
        noise=args.augment_noise, label_source=args.labels_from, workers=args.workers,
        device=args.device, precision=args.precision, save_dtype=args.save_dtype,
        cache_dir=args.cache_dir, resume=args.resume, stop_after=args.stop_after,
        summary=not args.no_summary, ensemble=args.ensemble)
    result = train_model(options, progress=ProgressPrinter())
    v = result.validation
    if result.path is None:
        print(f"paused after epoch {result.epochs_run}; continue with the same command plus "
              "--resume", file=sys.stderr)
        return 0
    print(f"wrote {result.path}")
    if result.members:
        for i, m in enumerate(result.members):
            mv = m.validation
            print(f"network {i + 1}/{len(result.members)} (seed {args.seed + i}): epochs "
                  f"{m.epochs_run} ({m.stopped}), kept epoch {m.saved_epoch}; validation "
                  f"R² {_num(mv.get('r2'))}  MAE {_num(mv.get('mae'))}")
        print(f"ensemble of {len(result.members)}: validation n {v.get('n')}  "
              f"R² {_num(v.get('r2'))}  MAE {_num(v.get('mae'))}; wall time "
              f"{_duration(result.wall_s)}")
        return 0
    kept = (f"kept epoch {result.saved_epoch} (the last), best epoch {result.best_epoch}"
            if args.keep == "last" else f"best epoch {result.best_epoch}")
    print(f"epochs {result.epochs_run} ({result.stopped}), {kept}; "
          f"validation n {v.get('n')}  R² {_num(v.get('r2'))}  MAE {_num(v.get('mae'))}; "
          f"{result.images_per_s:.1f} training images/s, wall time {_duration(result.wall_s)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nvir_agent.model.modelfile import load_model
    from nvir_agent.training.evaluate import evaluate_model, plot_predictions, write_predictions
    from nvir_agent.training.labels import read_labels

    loaded = load_model(args.model)
    labels = read_labels(args.labels, args.images, label_source=args.labels_from)
    ev = evaluate_model(loaded, labels, batch_size=args.batch_size, device=args.device,
                        workers=args.workers)
    result: dict[str, Any] = {"model": ev.model, **ev.report}
    base = None
    if args.baseline:
        from nvir_agent.training.baseline import baseline_for_model

        base = baseline_for_model(loaded.metadata, labels, train_labels=args.train_labels,
                           train_images=args.train_images, workers=args.workers)
        result["baseline"] = base.report
    if args.predictions:
        write_predictions(args.predictions, ev)
    if args.plot:
        plot_predictions(
            args.plot, ev.y_true, ev.y_pred, title=f"{ev.model} on {args.labels}",
            baseline=None if base is None else base.y_pred,
            baseline_true=None if base is None else base.y_true)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_report(result, args.labels)
    if args.plot:
        print(f"plot: {args.plot}")
    if args.predictions:
        print(f"predictions: {args.predictions}")
    return 0


def _print_report(result: dict[str, Any], labels: Path) -> None:
    base = result.get("baseline")
    print(f"model {result['model']} on {labels} ({result['n']} images"
          + (f", {result['skipped']} left out" if result.get("skipped") else "") + ")")
    header = f"{'':<16}{'n':>6}{'R²':>9}{'MAE':>9}"
    if base:
        header += f"   baseline{'R²':>7}{'MAE':>9}"
    print(header)
    rows = [("overall", result, base)]
    rows += [(f"site {k}", m, (base or {}).get("per_site", {}).get(k))
             for k, m in result["per_site"].items()]
    rows += [(f"day {k}", m, (base or {}).get("per_day", {}).get(k))
             for k, m in result["per_day"].items()]
    for name, m, b in rows:
        line = f"{name:<16}{m['n']:>6}{_num(m['r2']):>9}{_num(m['mae']):>9}"
        if base:
            line += f"   {'':>8}{_num((b or {}).get('r2')):>7}{_num((b or {}).get('mae')):>9}"
        print(line)
