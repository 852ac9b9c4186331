"""Export a plate's table (CSV or XLSX) — plain functions, run in a worker."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from nvir_agent.errors import UsageError
from nvir_agent.gui.plate_data import PlateData

COLUMNS = ("plate", "well", "role", "compound", "concentration_uM", "group", "timepoint",
           "viability_rel_vehicle", "viability_rel_baseline", "diameter", "circularity",
           "focus", "passed_qc", "flags")


def plate_rows(data: PlateData) -> list[list[Any]]:
    """One row per well and time point, wells in plate order."""
    rows = []
    wells = sorted({w for (w, _tp) in data.points.keys() | data.features.keys()},
                   key=lambda w: (len(w.rstrip("0123456789")), w))
    for well in wells:
        a = data.plate_map.wells.get(well) if data.plate_map else None
        for tp in data.timepoints:
            point = data.points.get((well, tp))
            feats = data.features.get((well, tp), {})
            if point is None and not feats:
                continue
            rows.append([
                data.plate, well, a.role if a else "", a.compound if a else "",
                a.concentration_uM if a else "", a.group_label if a else "", tp,
                data.value(well, tp, "rel_control"), data.value(well, tp, "rel_baseline"),
                feats.get("diameter"), feats.get("circularity"), feats.get("focus"),
                point.passed_qc if point else "", ";".join(point.flags) if point else "",
            ])
    return rows


def export_plate(data: PlateData, path: str | os.PathLike[str]) -> Path:
    """Write the plate as CSV, or XLSX when the name ends in .xlsx; the file appears
    whole (written next to it, then renamed), never half-written."""
    out = Path(path)
    rows = plate_rows(data)
    part = out.with_name(f".{out.name}.part")
    try:
        if out.suffix.lower() == ".xlsx":
            from openpyxl import Workbook

            wb = Workbook()
            ws = wb.active
            ws.title = data.plate[:31] or "plate"
            ws.append(list(COLUMNS))
            for r in rows:
                ws.append(["" if v is None else v for v in r])
            wb.save(part)
        else:
            with open(part, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(COLUMNS)
                w.writerows(["" if v is None else v for v in r] for r in rows)
        os.replace(part, out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise UsageError(f"Cannot write {out}: {exc.strerror or exc}.",
                         "Choose a folder you may write to.") from exc
    return out
