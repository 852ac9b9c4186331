"""Copying a store's images and measurements into another store: the spool's sync
when the server returns, and `nvir-agent db copy` that moves a station's history
into the central store. Idempotent: what the target already has is left alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from nvir_agent.store.database import Store, _text
from nvir_agent.store.rows import MeasurementRow
from nvir_agent.store.schema import to_json
from nvir_agent.store.writes import details_json


def copy_image(store: Store, conn: Any, row: MeasurementRow, path: str) -> int:
    """One image with its measurement (a row read from another store, at ``path``) into
    ``store`` inside its open transaction ``conn``; 1 when it was written, 0 when the
    target already has it (same identity, size and mtime, and not less finished)."""
    where, ident = store._identity(path)
    lock = " FOR UPDATE" if store._sql.name == "postgresql" else ""
    old = conn.execute(f"SELECT id, size, mtime, state FROM images WHERE {where}{lock}",
                       ident).fetchone()
    same = old is not None and old["size"] == row.size and old["mtime"] == row.mtime
    if same and (old["state"] != "pending" or row.state == "pending"):
        return 0  # already recorded (by this station before, or by another)
    k, now = row.key, time.time()
    fields = (k.vendor, k.plate, k.well, k.row, k.column, k.field, k.channel, k.z,
              k.timepoint, k.elapsed_s)
    if old is None:
        image_id = store._sql.insert_id(
            conn,
            "INSERT INTO images(path, size, mtime, vendor, plate, well, row, col, field, "
            "channel, z, timepoint, elapsed_s, state, error, attempts, created_at, "
            "updated_at, station, scope) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (store._sql.path(path), row.size, row.mtime, *fields, row.state,
             _text(row.error), row.attempts, row.updated_at or now, row.updated_at or now,
             store.station, store.scope_of(path)))
    else:
        image_id = int(old["id"])
        conn.execute(
            "UPDATE images SET size=?, mtime=?, vendor=?, plate=?, well=?, row=?, col=?, "
            "field=?, channel=?, z=?, timepoint=?, elapsed_s=?, state=?, error=?, "
            "attempts=?, updated_at=?, claimed_by=NULL, claimed_at=NULL WHERE id=?",
            (row.size, row.mtime, *fields, row.state, _text(row.error), row.attempts,
             row.updated_at or now, image_id))
        conn.execute("DELETE FROM measurements WHERE image_id = ?", (image_id,))
    if k.plate:
        conn.execute(
            "INSERT INTO plates(plate, first_seen, last_seen) VALUES (?,?,?) "
            "ON CONFLICT(plate) DO UPDATE SET last_seen = excluded.last_seen",
            (k.plate, now, now))
    if row.state == "done":
        conn.execute(
            "INSERT INTO measurements(image_id, found, viability, model, qc, features, "
            "created_at, outline, station, viability_low, viability_high, typicality, "
            "ood_distance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (image_id, None if row.found is None else int(row.found), row.viability,
             row.model, to_json(list(row.qc)), to_json(row.features),
             row.measured_at or now,
             to_json([list(p) for p in row.outline]) if row.outline else None,
             store.station, row.trust.viability_low, row.trust.viability_high,
             row.trust.typicality, row.trust.ood_distance))
    return 1


PAGE = 500


@dataclass(frozen=True)
class CopyReport:
    """What `db copy` did: rows written, and rows the target already had."""

    images: int
    images_kept: int
    plate_maps: int
    alerts: int
    alerts_kept: int


def _copy_alerts(source: Store, target: Store) -> tuple[int, int]:
    """Every alert of ``source`` (with its history) that ``target`` lacks; an active
    alert whose (plate, subject, rule) is already active in ``target`` is kept out
    (there is one active alert per key)."""
    written = kept = 0
    with target.transaction() as tx:
        have = {(a.plate, a.subject, a.rule, a.opened_at) for a in
                tx.alerts(include_closed=True)}
        active = {a.key for a in tx.alerts()}
        for a in sorted(source.alerts(include_closed=True), key=lambda a: a.id):
            if (a.plate, a.subject, a.rule, a.opened_at) in have or (
                    a.active and a.key in active):
                kept += 1
                continue
            new_id = target._sql.insert_id(
                tx._conn,
                "INSERT INTO alerts(plate, subject, rule, severity, state, message, value, "
                "timepoint, opened_at, updated_at, closed_at, details, ack_until) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (a.plate, a.subject, a.rule, a.severity, a.state, a.message, a.value,
                 a.timepoint, a.opened_at, a.updated_at, a.closed_at,
                 details_json(a.details), a.ack_until))
            for e in source.alert_events(a.id):
                tx.add_alert_event(new_id, e.action, e.at, e.user, e.comment)
            if a.active:
                active.add(a.key)
            written += 1
    return written, kept


def copy_store(source: Store, target: Store) -> CopyReport:
    """Bring ``source``'s images, measurements, plate maps and alerts into ``target``
    (the target's station owns the copied images); running it again copies nothing
    twice."""
    images = kept = 0
    after = 0
    while True:
        rows = source.measurements(after_id=after, limit=PAGE)
        if not rows:
            break
        paths = {r.id: os.fspath(r.path) for r in source.records([r.id for r in rows])}
        with target.transaction() as tx:
            for row in rows:
                n = copy_image(target, tx._conn, row, paths[row.id])
                images += n
                kept += 1 - n
        after = rows[-1].id
    maps = 0
    with target.transaction() as tx:
        for p in source.plates():
            if p.plate_map and not tx.plate_map_text(p.plate):
                maps += int(tx.save_plate_map(p.plate, p.plate_map))
    alerts, alerts_kept = _copy_alerts(source, target)
    return CopyReport(images, kept, maps, alerts, alerts_kept)
