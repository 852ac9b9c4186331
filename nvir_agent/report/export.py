"""Tabular results for `nvir-agent export`, at three levels:

- ``image`` — every image with its key, state and measurements (one row per file);
- ``well`` — one row per plate × well × read: the plate map's role, compound,
  concentration and group, the viability, relative to vehicle and to the
  well's baseline, whether the counting rule includes it (and why not), the
  QC flags, the number of images and their paths;
- ``compound`` — one row per compound × read: the IC50 under the reporting
  rule (number, text, CI), Hill slope, R², margin of safety, reliability and n.

Formats: CSV (provenance as leading ``# key: value`` lines), JSON lines (a
first line ``{"provenance": {...}}``) and XLSX (one sheet per level plus a
``provenance`` sheet). Values are plain: no ∞ or NaN in numeric columns —
those cells are empty and the text columns say what they mean.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from nvir_agent.monitor.timecourse import FLAG_BASELINE, PlateTimecourse
from nvir_agent.report.dili import CompoundDayFit
from nvir_agent.report.provenance import Provenance

LEVELS = ("image", "well", "compound")
FORMATS = ("csv", "jsonl", "xlsx")

WELL_COLUMNS = (
    "plate", "well", "timepoint", "elapsed_s", "role", "compound", "concentration_uM", "group",
    "included", "exclusion", "score", "viability_rel_control", "viability_rel_control_low",
    "viability_rel_control_high", "unlike_training", "viability_rel_baseline", "control_median", "baseline", "qc_flags", "flags", "n_images", "image_paths",
)
COMPOUND_COLUMNS = (
    "compound", "timepoint", "ic50_uM", "ic50_text", "reliability", "reason", "ci95_low_uM",
    "ci95_high_uM", "ci95_text", "hill", "r2", "cmax_uM", "mos", "mos_text",
    "n_concentrations", "n_wells", "highest_tested_uM", "model",
)
_QC_FLAGS = frozenset({"no_spheroid", "multiple_objects", "touches_border", "out_of_focus",
                       "underexposed", "saturated", "too_small", "too_large", "fragmented"})


def _num(v: float | None) -> float | None:
    """A finite number, else None (an empty cell)."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def well_rows(plates: Mapping[str, PlateTimecourse],
              paths: Mapping[int, str]) -> list[dict[str, Any]]:
    """One row per plate × well × read (``paths``: image id → file path)."""
    rows = []
    for _, tc in sorted(plates.items()):
        for p in sorted(tc.points, key=lambda p: (p.well, p.timepoint)):
            rows.append({
                "plate": p.plate, "well": p.well, "timepoint": p.timepoint,
                "elapsed_s": p.elapsed_s, "role": p.role, "compound": p.compound,
                "concentration_uM": p.concentration_uM, "group": p.group,
                "included": p.counted, "exclusion": p.exclusion, "score": _num(p.score),
                "viability_rel_control": _num(p.viability_rel_control),
                "viability_rel_control_low": _num(p.rel_control_low),
                "viability_rel_control_high": _num(p.rel_control_high),
                "unlike_training": p.unlike_training,
                "viability_rel_baseline": _num(p.viability_rel_baseline),
                "control_median": _num(p.control_median),
                "baseline": FLAG_BASELINE in p.flags,
                "qc_flags": [f for f in p.flags if f in _QC_FLAGS],
                "flags": [f for f in p.flags if f not in _QC_FLAGS],
                "n_images": len(p.image_ids) or p.n_fields,
                "image_paths": [paths.get(i, f"#{i}") for i in p.image_ids],
            })
    return rows


def compound_rows(fits: Iterable[CompoundDayFit]) -> list[dict[str, Any]]:
    """One row per compound × read, the IC50 reporting rule applied."""
    rows = []
    for f in sorted(fits, key=lambda f: (f.compound, f.day)):
        call = f.call
        mos, mos_text = f.mos_call
        ci = call.ci95 or (None, None)
        rows.append({
            "compound": f.compound, "timepoint": f.day,
            "ic50_uM": _num(call.value) if call.is_number else None,
            "ic50_text": call.text, "reliability": call.status, "reason": call.reason,
            "ci95_low_uM": _num(ci[0]), "ci95_high_uM": _num(ci[1]),
            "ci95_text": call.ci_text, "hill": _num(f.fit.hill), "r2": _num(f.fit.r2),
            "cmax_uM": _num(f.cmax_uM), "mos": _num(mos), "mos_text": mos_text,
            "n_concentrations": len(f.concentrations), "n_wells": sum(f.wells),
            "highest_tested_uM": max(f.concentrations) if f.concentrations else None,
            "model": f.fit.model,
        })
    return rows


def columns_of(rows: Sequence[dict[str, Any]], first: Sequence[str]) -> list[str]:
    """The fixed columns, then any others the rows carry, sorted."""
    extra = sorted({k for r in rows for k in r} - set(first) - {"id"})
    return [*first, *extra]


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ";".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_text(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None, out: TextIO,
               fmt: str, provenance: Provenance | None = None) -> int:
    """Write rows as CSV (``columns`` in that order) or JSON lines; returns the count."""
    n = 0
    if fmt == "jsonl":
        if provenance is not None:
            out.write(json.dumps({"provenance": provenance.as_dict()}) + "\n")
        for row in rows:
            row = {k: _json_value(v) for k, v in row.items() if k != "id"}
            out.write(json.dumps(row, default=str) + "\n")
            n += 1
        return n
    rows = list(rows)
    cols = list(columns) if columns is not None else columns_of(rows, ())
    if provenance is not None:
        for k, v in provenance.pairs():
            out.write(f"# {k}: {v}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(k)) for k in cols])
        n += 1
    return n


def write_xlsx(path: str | Path, sheets: Mapping[str, tuple[Sequence[str],
                                                            Sequence[dict[str, Any]]]],
               provenance: Provenance | None = None) -> dict[str, int]:
    """One sheet per level (name → (columns, rows)) plus a ``provenance`` sheet."""
    from openpyxl import Workbook  # imported here: only `export --format xlsx` needs it

    wb = Workbook()
    first = True
    counts: dict[str, int] = {}
    for name, (cols, rows) in sheets.items():
        ws = wb.active if first else wb.create_sheet()
        first = False
        ws.title = name
        ws.append(list(cols))
        for row in rows:
            ws.append([_cell(row.get(k)) if not isinstance(row.get(k), (int, float))
                       or isinstance(row.get(k), bool) else _json_value(row.get(k))
                       for k in cols])
        ws.freeze_panes = "A2"
        counts[name] = len(rows)
    if provenance is not None:
        ws = wb.create_sheet("provenance")
        ws.append(["key", "value"])
        for k, v in provenance.pairs():
            ws.append([k, v])
    wb.save(str(path))
    return counts
