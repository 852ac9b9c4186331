"""What the tray icon says: its state and tooltip from a status snapshot (no Qt)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from nvir_agent.core.status import EngineStatus
from nvir_agent.store import SEVERITY_RANK, Alert


@dataclass(frozen=True)
class TraySnapshot:
    """One poll of the running agent: engine status plus the active alerts."""

    status: EngineStatus
    alerts: tuple[Alert, ...] = ()
    done_at_start: int = 0
    paused: bool = False
    demo_model: bool = False
    hidden: frozenset[int] = field(default_factory=frozenset)  # acknowledged/shelved here
    images_today: int | None = None  # analysed since local midnight (None: not counted)


def open_alerts(snap: TraySnapshot) -> list[Alert]:
    """Alerts that still need the operator: open, not shelved from the window."""
    return [a for a in snap.alerts if a.state == "open" and a.id not in snap.hidden]


def problem(snap: TraySnapshot) -> str | None:
    """A folder missing, the model unavailable or another problem the running engine
    reports (it keeps running)."""
    missing = [f.folder for f in snap.status.folders if f.health == "missing"]
    if missing:
        return f"folder unavailable: {missing[0]}"
    if snap.status.model.startswith("scoring off"):
        return "no model: viability is not scored"
    if snap.status.problems:  # the database locked, the model file unusable …
        return snap.status.problems[0]
    return None


def tray_state(snap: TraySnapshot) -> str:
    """error > alert (worst severity) > paused > analysing > watching."""
    st = snap.status
    if st.error or problem(snap):
        return "error"
    alerts = open_alerts(snap)
    if alerts:
        worst = max(SEVERITY_RANK.get(a.severity, 0) for a in alerts)
        return "alert-critical" if worst >= SEVERITY_RANK["critical"] else "alert-warning"
    if snap.paused or getattr(st, "paused", False):
        return "paused"
    if st.pending or st.settling:
        return "analysing"
    return "watching"


def tooltip(snap: TraySnapshot, now: float | None = None) -> str:
    """Folders, images analysed, open alerts and the model in use."""
    st = snap.status
    state = tray_state(snap)
    alerts = open_alerts(snap)
    lines = ["NViR Agent — " + {
        "error": "problem: " + (st.error or problem(snap) or "unknown"),
        "alert-critical": "CRITICAL alert",
        "alert-warning": "alert",
        "paused": "paused (not watching)",
        "analysing": f"analysing ({st.pending + st.settling} images queued)",
        "watching": "watching",
    }[state]]
    if st.folders:
        for f in st.folders[:3]:
            lines.append(f"Folder: {Path(f.folder).name or f.folder} ({f.health})")
        if len(st.folders) > 3:
            lines.append(f"… and {len(st.folders) - 3} more folders")
    else:
        lines.append("No folder watched (Settings…)")
    if snap.images_today is not None:
        lines.append(f"Images analysed today: {snap.images_today}"
                     + (f", {st.failed} failed in total" if st.failed else ""))
    else:
        since = (time.strftime("%H:%M", time.localtime(st.started_at)) if st.started_at
                 else "start")
        lines.append(f"Images analysed since {since}: {max(st.done - snap.done_at_start, 0)}"
                     + (f", {st.failed} failed in total" if st.failed else ""))
    if alerts:
        crit = sum(a.severity == "critical" for a in alerts)
        lines.append(f"Open alerts: {len(alerts)}" + (f" ({crit} critical)" if crit else ""))
    else:
        lines.append("Open alerts: none")
    model = st.model or "unknown"
    if snap.demo_model or model.startswith("DEMO model"):
        lines.append("Model: demo model — synthetic training only")
    else:
        first = model.split(". ")[0]
        lines.append(f"Model: {first}")
    return "\n".join(lines)
