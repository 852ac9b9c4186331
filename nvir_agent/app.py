"""One place that wires an engine: the stages, the monitor and its notifier.

The engine module itself imports no torch, OpenCV or Qt: it runs the stages
and tells the listeners it is given. This module builds them from the config —
read, segment and score, then the monitor (plate maps → time courses → alert
rules → notifier) — and adds what the caller brings: notification sinks (the
tray) and further result listeners. Nothing is registered process-wide.
"""

from __future__ import annotations

from collections.abc import Sequence

from nvir_agent.config import Config
from nvir_agent.core.engine import Engine
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notice, Sink, build_notifier
from nvir_agent.pipeline.contract import ResultListener, Stage
from nvir_agent.pipeline.stages import build_stages
from nvir_agent.pipeline.workers import with_image_workers
from nvir_agent.store import Store, database_url, store_options
from nvir_agent.store.url import is_postgres

__all__ = ["build_engine"]


def build_engine(
    config: Config, *, sinks: Sequence[Sink] = (), listeners: Sequence[ResultListener] = (),
    stages: Sequence[Stage] | None = None, replace_damaged_database: bool = False,
) -> Engine:
    """A ready, not started, engine for ``config``.

    ``sinks`` join the notifier's log and e-mail/chat channels (a sink named
    ``tray`` only while ``notify.tray`` is on); ``listeners`` are told after the
    monitor about every committed batch. ``stages`` replaces the read → segment
    → score pipeline (tests and benchmarks). The stages before scoring run in
    ``[imaging] workers`` processes (``pipeline/workers.py``). Opens the
    database; a problem with the model file or a setting raises here, before
    anything runs.

    A SQLite database is checked page by page first; a damaged one (or another
    program's) raises ``store.DamagedDatabase`` and is left as it is, unless
    ``replace_damaged_database`` (the user's consent): then it is kept aside,
    renamed with the date and time, and a new one is created.
    """
    url = database_url(config)
    options = store_options(config)
    if not is_postgres(url):
        options.update(thorough=True, replace_damaged=replace_damaged_database)
    store = Store(url, **options)
    try:
        stage_list = (with_image_workers(config, build_stages(config)) if stages is None
                      else list(stages))
        monitor = Monitor(config, store, build_notifier(config.notify, sinks=sinks))
    except BaseException:
        store.close()
        raise
    notifier = monitor.notifier

    def tell(title: str, body: str, severity: str) -> None:
        notifier.submit([Notice(title, body, severity, kind="agent")])

    for stage in stage_list:
        if hasattr(stage, "on_model_back"):  # the scoring stage: the model file's fate
            stage.on_model_back = store.requeue_awaiting_model
            stage.tell = tell
    return Engine(config, stages=stage_list, listeners=[monitor, *listeners], store=store)
