"""Model commands: ``model import`` (the paper's Lightning checkpoint → model
file), ``model info``, ``score`` (viability per image) and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nvir_agent.config import load_config, use_all_cores
from nvir_agent.errors import ModelLoadError, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("model", help="import and inspect NViR model files")
    msub = m.add_subparsers(dest="model_command", metavar="ACTION")
    imp = msub.add_parser(
        "import",
        help="convert the paper's PyTorch Lightning checkpoint (.ckpt) into a model file",
        description="Read the NViR paper's .ckpt without Lightning or OmegaConf and without "
        "running any pickled code, check every weight against the network, and write a "
        ".safetensors model file with the paper's preprocessing.",
    )
    imp.add_argument("ckpt", type=Path, metavar="CKPT", help="the .ckpt file")
    imp.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="MODEL",
        help="model file to write (.safetensors)",
    )
    imp.add_argument("--fp16", action="store_true", help="store weights as float16 (half size)")
    imp.set_defaults(func=cmd_import)

    info = msub.add_parser("info", help="architecture, preprocessing, provenance and metrics")
    info.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        nargs="?",
        help="model file (default: the one the agent would use, from agent.toml)",
    )
    info.add_argument("--json", action="store_true",
                      help="print one JSON object (with the whole training history)")
    info.add_argument("--history", action="store_true",
                      help="also print the training history, one line per epoch")
    info.set_defaults(func=cmd_info)

    summ = msub.add_parser(
        "summarise",
        help="store a summary of the model's training images (the out-of-distribution check) "
        "and calibrate its intervals",
        description="Read, segment and encode the images the model was trained on, store "
        "their summary in the model file (the network's tensors are copied unchanged) and "
        "calibrate the typicality on held-out images of the same kind: --held-out, or else "
        "every fourth image of --images. With labels (a labels.csv in the held-out folder) "
        "the 90%% interval of every score is calibrated too.",
    )
    summ.add_argument("model", type=Path, metavar="MODEL", help="model file (.safetensors)")
    summ.add_argument("--images", required=True, type=Path, metavar="FOLDER",
                      help="images the model was trained on (or a folder with labels.csv)")
    summ.add_argument("--held-out", type=Path, metavar="FOLDER",
                      help="images of the same kind the model was not trained on, with a "
                      "labels.csv to calibrate intervals")
    summ.add_argument("--out", type=Path, metavar="MODEL",
                      help="write here instead of rewriting MODEL")
    summ.add_argument("--limit", type=int, default=400, metavar="N",
                      help="use at most N images of each folder, evenly spread (default 400)")
    summ.set_defaults(func=cmd_summarise)
    m.set_defaults(func=lambda args: _usage(m))

    s = sub.add_parser("score", help="NViR viability of image files, one line per image")
    s.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    s.add_argument(
        "--model",
        type=Path,
        metavar="MODEL",
        help="model file (default: [model] path in agent.toml, else the demo model)",
    )
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument(
        "--device", choices=("auto", "cpu", "cuda", "mps"), help="default: [model] device"
    )
    s.set_defaults(func=cmd_score)

    b = sub.add_parser("bench", help="measure scoring and preprocessing speed on this machine")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument(
        "--images", type=int, default=32, metavar="N", help="images per measurement (default 32)"
    )
    b.add_argument(
        "--model",
        type=Path,
        metavar="MODEL",
        help="model file (default: the configured one; random weights if none)",
    )
    b.add_argument(
        "--threads", type=int, help="default: [model] one_shot_threads (0: all cores)"
    )
    b.add_argument(
        "--rounds", type=int, default=3, help="best of this many rounds per measurement (default 3)"
    )
    b.add_argument(
        "--all",
        action="store_true",
        help="also measure torch.compile and OpenVINO (slow to prepare; used only on request)",
    )
    b.set_defaults(func=cmd_bench)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def cmd_import(args: argparse.Namespace) -> int:
    from nvir_agent.model.ckpt_import import import_checkpoint

    report = import_checkpoint(args.ckpt, args.out, dtype="float16" if args.fp16 else "float32")
    print(
        f"imported {report.tensors} tensors ({report.parameters:,} parameters) from {report.source}"
    )
    if report.prefix_stripped:
        print(f"  removed the key prefix '{report.prefix_stripped}'")
    if report.info:
        print("  " + ", ".join(f"{k} {v}" for k, v in report.info.items()))
    if report.ignored_keys:
        print(f"  not needed for scoring: {', '.join(report.ignored_keys)}")
    if report.placeholders:
        print(f"  left unread (never executed): {', '.join(report.placeholders)}")
    print(f"wrote {report.out}")
    return 0


def cmd_summarise(args: argparse.Namespace) -> int:
    from nvir_agent.model.uncertainty import MIN_CALIBRATION
    from nvir_agent.training.summarise import summarise_model

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  {done}/{total} images", file=sys.stderr)

    r = summarise_model(args.model, args.images, held_out=args.held_out, out=args.out,
                        limit=args.limit, progress=progress)
    print(f"summarised {r.fit_images} training images, calibrated on {r.held_out_images} "
          f"held-out images ({r.skipped} skipped); unlike_training above distance "
          f"{r.threshold:.2f}")
    if r.calibrated:
        print(f"intervals: 90% nominal, {r.coverage:.0%} of held-out labels covered, "
              f"mean width {r.mean_width:.3f}")
    else:
        print(f"intervals: not calibrated ({r.labelled} labelled held-out images; at least "
              f"{MIN_CALIBRATION} are needed)")
    print(f"wrote {r.out}")
    return 0


def _info_dict(path: Path) -> dict[str, Any]:
    """What ``model info`` shows, from the file's header and metadata (no torch)."""
    from nvir_agent.model.fileheader import FIX_GET, read_model_info
    from nvir_agent.model.preprocess import PreprocessSpec
    from nvir_agent.model.typicality import describe_metadata
    from nvir_agent.model.uncertainty import IntervalCalibration

    info = read_model_info(path)
    meta = info.metadata
    intervals = "none: scores of this model have no interval (calibrate them with " \
        "`nvir-agent model summarise MODEL --images FOLDER --held-out LABELLED_FOLDER`)"
    if "uncertainty" in meta:
        try:
            intervals = IntervalCalibration.from_metadata(meta["uncertainty"]).describe()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            intervals = f"unusable calibration ({exc}): scores have no interval"
    try:
        members = info.members
    except ValueError as exc:
        raise ModelLoadError(f"Model file {path} is corrupt: {exc}.", FIX_GET) from exc
    ensemble = dict(meta.get("ensemble") or {})
    try:
        spec = PreprocessSpec.from_dict(meta["preprocessing"])
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"Model file {path} has an unusable preprocessing spec: {exc}.", FIX_GET) from exc
    return {
        "path": str(path),
        "name": info.name,
        "sha256": info.sha256,
        "size_bytes": info.file_size,
        "dtype": info.stored_dtype,
        "parameters": info.parameters,
        "members": members,
        "ensemble": ensemble or None,
        "architecture": meta["architecture"],
        "format_version": meta["format_version"],
        "preprocessing": spec.to_dict(),
        "output": meta.get("output"),
        "provenance": meta.get("provenance", {}),
        "metrics": meta.get("metrics", {}),
        "out_of_distribution_check": describe_metadata(meta.get("typicality")),
        "intervals": intervals,
        "extra": {
            k: v
            for k, v in meta.items()
            if k
            not in {
                "architecture",
                "format_version",
                "preprocessing",
                "output",
                "provenance",
                "metrics",
                "dtype",
                "typicality",
                "uncertainty",
                "ensemble",
            }
        },
    }


def cmd_info(args: argparse.Namespace) -> int:
    from nvir_agent.model.preprocess import PreprocessSpec

    path = args.model
    if path is None:
        from nvir_agent.model.locate import describe_model_source, resolve_model

        cfg = load_config(args.config, check_folders=False)
        source = resolve_model(cfg)
        if source.path is None:
            if args.json:
                print(json.dumps({"path": None, "scoring": "off", "reason": source.reason}))
            else:
                print(describe_model_source(cfg))
            return 0
        if not args.json:
            print(describe_model_source(cfg))
        path = source.path
    info = _info_dict(path)
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    spec = PreprocessSpec.from_dict(info["preprocessing"])
    print(f"model:         {info['path']}  ({info['name']})")
    ensemble = ""
    if info["members"] > 1:
        seeds = (info["ensemble"] or {}).get("seeds")
        ensemble = f"ensemble of {info['members']}" + (
            f" (seeds {', '.join(map(str, seeds))})" if seeds else "") + ", "
    print(
        f"architecture:  {info['architecture']} (format {info['format_version']}), "
        f"{ensemble}{info['parameters']:,} parameters, {info['dtype']}, "
        f"{info['size_bytes'] / 1e6:.1f} MB"
    )
    print(f"preprocessing: {spec.describe()}")
    print(f"output:        {info['output']}")
    print(f"typicality:    {info['out_of_distribution_check']}")
    print(f"intervals:     {info['intervals']}")
    for k, v in info["provenance"].items():
        print(f"provenance:    {k}: {v}")
    metrics = info["metrics"] or {}
    print(
        "metrics:       " + (", ".join(f"{k} {v}" for k, v in metrics.items()) or "none recorded")
    )
    extra = dict(info["extra"])
    history = extra.pop("history", None)
    if extra.get("data"):
        from nvir_agent.report.provenance import training_summary

        print(f"training data: {training_summary({'data': extra.pop('data')})}")
    if history:
        print(f"training:      {history_summary(history, metrics)}")
    for k, v in extra.items():
        text = (", ".join(f"{a}={b}" for a, b in v.items() if not isinstance(b, dict))
                if isinstance(v, dict) else json.dumps(v, default=str))
        print(f"{k + ':':<15}{text}")
    if history and args.history:
        keys = [k for k in ("member", "epoch", "train_loss", "val_loss", "val_mae", "val_r2", "lr",
                            "seconds") if any(k in h for h in history)]
        print("history:")
        print("  " + "  ".join(f"{k:>10}" for k in keys))
        for h in history:
            print("  " + "  ".join(f"{_cell(h.get(k)):>10}" for k in keys))
    elif history:
        print(f"{'':15}(--history for all {len(history)} epochs, --json for everything)")
    return 0


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def history_summary(history: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    """'24 epochs; kept epoch 24 (best validation loss at epoch 22); final losses:
    train 0.0641, validation 0.00412'."""
    if any("member" in h for h in history):
        runs = [m for m in metrics.get("members", []) if isinstance(m, dict)]
        return "ensemble: " + "; ".join(
            f"network {i + 1} (seed {m.get('seed')}) {m.get('epochs_run')} epochs, kept epoch "
            f"{m.get('saved_epoch')}, validation MAE {_cell(m.get('validation', {}).get('mae'))}"
            for i, m in enumerate(runs))
    last = history[-1]
    parts = [f"{metrics.get('epochs_run', len(history))} epochs"]
    kept = metrics.get("saved_epoch", last.get("epoch"))
    best = metrics.get("best_epoch")
    parts.append(f"kept epoch {kept}" + (f" (best validation loss at epoch {best})"
                                         if best is not None and best != kept else ""))
    if metrics.get("stopped"):
        parts.append(f"stopped by {metrics['stopped']}")
    losses = [f"{name} {_cell(last[k])}" for k, name in
              (("train_loss", "train"), ("val_loss", "validation")) if k in last]
    if losses:
        parts.append("final losses: " + ", ".join(losses))
    return "; ".join(parts)


def cmd_score(args: argparse.Namespace) -> int:
    import numpy as np

    from nvir_agent.errors import AnalysisError, ImageError
    from nvir_agent.imaging.analyse import analyse
    from nvir_agent.imaging.reading import read_image
    from nvir_agent.model.scorer import Scorer

    cfg = use_all_cores(load_config(args.config, check_folders=False))
    if args.device:
        cfg.model.device = args.device
    if args.model:
        cfg.model.path = str(args.model.resolve())
        cfg.model.enabled = True
    scorer = Scorer.from_config(cfg, low_priority=False)
    needs_mask = scorer.spec.crop == "spheroid"
    chunk = max(scorer.batch_size, 32)
    failed = total = 0
    pending: list[tuple[dict[str, Any], np.ndarray | None]] = []

    def flush() -> None:
        ok = [(row, x) for row, x in pending if x is not None]
        if ok:
            values = scorer.score_tensors(np.stack([x for _, x in ok]))
            for (row, _), v in zip(ok, values, strict=True):
                row["viability"] = round(float(v), 4)
        for row, _ in pending:
            if args.json:
                print(json.dumps(row))
            elif row["error"]:
                print(f"{row['path']}, error: {row['error']}")
            else:
                print(f"{row['path']}, {row['viability']:.4f}")
        pending.clear()

    for path in args.images:
        total += 1
        row: dict[str, Any] = {
            "path": str(path),
            "viability": None,
            "model": scorer.name,
            "error": None,
        }
        x = None
        try:
            where = {"max_side": cfg.imaging.max_pixels_side, "page": cfg.imaging.page}
            mask = None
            if needs_mask:
                img = analyse(path, **where)
                if not img.segmentation.found:
                    raise AnalysisError(f"{path}: no spheroid found to crop around.")
                mask = img.segmentation.mask
            else:
                img = read_image(path, **where)
            x = scorer.preprocess(img.pixels, bit_depth=img.bit_depth, mask=mask)
        except ImageError as exc:
            row["error"] = exc.message
            failed += 1
        pending.append((row, x))
        if len(pending) >= chunk:
            flush()
    flush()
    print(
        f"{total - failed} of {total} images scored with {scorer.name} "
        f"({scorer.choice.chosen.description})"
        + (f"; {failed} not scored (unreadable or no spheroid: see the errors above)"
           if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed == total else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from nvir_agent.model.bench import run_benchmark
    from nvir_agent.model.locate import resolve_model

    if args.images < 1:
        raise UsageError(
            "--images must be at least 1.", "For example: nvir-agent bench --images 32"
        )
    cfg = use_all_cores(load_config(args.config, check_folders=False))
    path = args.model
    if path is None:
        path = resolve_model(cfg).path
    result = run_benchmark(
        path,
        images=args.images,
        threads=args.threads if args.threads is not None else cfg.model.threads,
        device=cfg.model.device,
        fast_path=cfg.model.fast_path,
        rounds=args.rounds,
        include_all=args.all,
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.table())
    return 0
