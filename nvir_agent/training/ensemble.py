"""Train a deep ensemble: ``nvir-agent train --ensemble N``.

N networks are trained one after another with the paper's recipe on the same
images and the same split, from seeds ``seed``, ``seed + 1``, … (a member's
seed sets its initial weights, its batch order and its augmentations; the
first member is exactly the network ``train`` writes for ``--seed seed``).
They are written to one model file (:class:`nvir_agent.model.network.NViREnsemble`,
whose viability is the members' mean) with the validation metrics of the
ensemble and of each member. The training-image summary is stored as for one
network (over the members' features side by side), and the 90 % interval is
calibrated on the validation images from the members' spread combined with
each member's MC dropout (see :mod:`nvir_agent.model.uncertainty`).

An ensemble's training is not resumable: ``--resume`` and ``--stop-after`` are
refused with a clear message, no resume checkpoint is written, and nothing
is written until the last member has finished (an interrupted run leaves no
file behind and is started again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from nvir_agent.errors import ConfigError
from nvir_agent.model.modelfile import save_model
from nvir_agent.model.network import NViREnsemble
from nvir_agent.training.evaluate import metrics_report, predict
from nvir_agent.training.train import (
    Progress,
    TrainOptions,
    TrainResult,
    check_options,
    fit,
    initial_network,
    metadata,
    prepare,
    resume_path,
    summarise,
    train,
)

log = logging.getLogger(__name__)


def train_model(options: TrainOptions, progress: Callable[[Progress], None] | None = None
                ) -> TrainResult:
    """``nvir-agent train``: one network, or an ensemble when ``options.ensemble`` > 1."""
    if options.ensemble == 1:
        return train(options, progress)
    return train_ensemble(options, progress)


def member_seeds(options: TrainOptions) -> list[int]:
    return [options.seed + i for i in range(options.ensemble)]


def train_ensemble(options: TrainOptions, progress: Callable[[Progress], None] | None = None
                   ) -> TrainResult:
    """Train ``options.ensemble`` networks and write them as one model file (see module doc)."""
    check_options(options)
    n = options.ensemble
    if n < 2:
        raise ConfigError(f"an ensemble needs at least 2 networks, not {n}",
                          "use --ensemble 2 or more, or train one network without --ensemble")
    if options.resume or options.stop_after is not None:
        raise ConfigError(
            "--resume and --stop-after are not available with --ensemble: an ensemble's "
            "members are trained in one run",
            "train the ensemble again without them (or train single networks, which resume)")
    ckpt = resume_path(options.out)
    if ckpt.exists():
        raise ConfigError(
            f"{ckpt} holds an interrupted training run of one network for {options.out}",
            "finish it with the same command plus --resume (without --ensemble), or delete "
            "the file to train an ensemble there")
    started = time.monotonic()
    notify = progress or (lambda p: None)
    data = prepare(options, notify)
    nets, results = [], []
    for i, seed in enumerate(member_seeds(options)):
        if i == 0:
            module = data.module
        else:
            torch.manual_seed(seed)
            module, _, _ = initial_network(options.init, i, n)
        log.info("training network %d of %d (seed %d)", i + 1, n, seed)
        net, result = fit(replace(options, seed=seed), data, module, notify, started, None,
                          None, member=i, members=n)
        nets.append(net.cpu())
        results.append(result)
    ensemble = NViREnsemble(n)
    for member, net in zip(ensemble.members, nets, strict=True):
        member.load_state_dict(net.state_dict())
    ensemble.eval().to(data.device)
    pred = predict(ensemble, data.x_val, data.spec, batch_size=max(options.batch_size, 64),
                   device=data.device, bf16=data.bf16)
    ensemble.cpu()
    report = metrics_report(data.val_items, data.y_val, pred)
    history = [{"member": i, **h} for i, r in enumerate(results) for h in r.history]
    result = TrainResult(
        None, sum(r.epochs_run for r in results), 0, "ensemble", report, history,
        time.monotonic() - started, float(np.mean([r.images_per_s for r in results])),
        members=results)
    meta = metadata(options, data, result)
    meta["metrics"] = {
        "validation": report, "kept": options.keep,
        "epochs_run": result.epochs_run,
        "members": [{"seed": seed, "validation": {k: r.validation.get(k)
                                                  for k in ("n", "r2", "mae")},
                     "best_epoch": r.best_epoch, "saved_epoch": r.saved_epoch,
                     "epochs_run": r.epochs_run, "stopped": r.stopped}
                    for seed, r in zip(member_seeds(options), results, strict=True)],
    }
    meta["ensemble"] = {"members": n, "seeds": member_seeds(options),
                        "combined": "mean of the members' viabilities"}
    result.path = save_model(options.out, ensemble, data.spec, meta, dtype=options.save_dtype)
    result.metadata = meta
    if options.summary:
        summarise(result.path, data)
    log.info("wrote %s (ensemble of %d, validation R² %s, MAE %s; members' MAE %s)",
             result.path, n, report.get("r2"), report.get("mae"),
             ", ".join(str(r.validation.get("mae")) for r in results))
    return result
