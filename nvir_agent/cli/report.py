"""Report commands: `dose-response` (fit one curve from a CSV) and `report`
(the self-contained HTML report of a database)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from nvir_agent.errors import DataError, StoreError

_CONC_NAMES = ("concentration", "concentration_um", "conc")
_RESP_NAMES = ("response", "resp", "viability", "value")
_WEIGHT_NAMES = ("weight", "w")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dose-response",
        help="fit a dose-response curve (IC50 with 95%% CI) to a CSV of concentration,response",
        description="Fit a log-logistic dose-response curve to CSV rows "
        "'concentration,response[,weight]' (header required; concentration >= 0, "
        "weights >= 0 and optional). 2pl: y = 1/(1+(x/IC50)^h) for responses normalised "
        "to vehicle controls; 4pl adds free top and bottom plateaus for any scale. "
        "IC50 beyond 10x the highest concentration is reported as infinite. In --json "
        'output an infinite value is the string "inf" and a value that could not be '
        "estimated is null.",
    )
    p.add_argument("csv", metavar="CSV", help="file with columns concentration,response[,weight]")
    p.add_argument("--model", choices=("2pl", "4pl"), default="2pl", help="curve model (default 2pl)")
    p.add_argument(
        "--normalised-plateaus",
        action="store_true",
        help="4pl only: bound the plateaus for normalised data (top 0–1.5, bottom 0–1)",
    )
    p.add_argument("--json", action="store_true", help="print the fit as JSON")
    p.set_defaults(func=cmd_dose_response)

    r = sub.add_parser(
        "report",
        help="write a self-contained HTML report (plates, time courses, IC50, margin of safety)",
        description="Write one HTML file with figures inside: plate heatmaps per time point, "
        "viability time courses per compound with the vehicle band, dose-response curves "
        "with IC50 per time point, the margin-of-safety table (and ROC AUC with a compound table) "
        "and a QC summary. Reads the database named in the config (or --db).",
    )
    r.add_argument("--plate", help="only this plate (default: all plates)")
    r.add_argument("--timepoint", "--day", dest="day", type=int, metavar="N",
                   help="only this time point for heatmaps and dose-response (--day: the same)")
    r.add_argument(
        "--compounds",
        metavar="CSV",
        help="compound table 'compound,dili[,cmax_uM]' (dili 1/0 or positive/negative): "
        "margin of safety, ROC AUC, sensitivity and specificity at a 100x margin",
    )
    r.add_argument("--db", metavar="FILE", help="database to read (default: storage.database)")
    r.add_argument("--out", metavar="HTML", default="report.html",
                   help="report file to write (default: report.html)")
    r.set_defaults(func=cmd_report)



def read_dose_response_csv(path: str | Path) -> tuple[list[float], list[float], list[float] | None]:
    """Concentrations, responses and weights (None when the CSV has no weight column)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError as exc:
        raise DataError(f"Dose-response file {p} does not exist.", "Check the path.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"Cannot read dose-response file {p}: {exc}.",
            "Give a UTF-8 CSV text file with columns concentration,response[,weight].",
        ) from exc
    except csv.Error as exc:
        raise DataError(f"{p} is not a valid CSV file: {exc}.", "Save it as plain CSV.") from exc
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{p} is empty.", "Add a header 'concentration,response' and data rows.")
    header = [c.strip().lower() for c in rows[0]]

    def column(names: tuple[str, ...], required: bool) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        if required:
            raise DataError(
                f"{p} has no '{names[0]}' column (header: {','.join(rows[0])}).",
                "The first line must name the columns: concentration,response[,weight].",
            )
        return None

    ci, ri, wi = column(_CONC_NAMES, True), column(_RESP_NAMES, True), column(_WEIGHT_NAMES, False)
    conc: list[float] = []
    resp: list[float] = []
    weights: list[float] = []
    for line_no, row in enumerate(rows[1:], start=2):
        wanted = [("concentration", ci), ("response", ri)] + ([("weight", wi)] if wi is not None else [])
        values = []
        for name, idx in wanted:
            cell = row[idx].strip() if idx is not None and idx < len(row) else ""
            try:
                v = float(cell)
            except ValueError:
                raise DataError(
                    f"{p} line {line_no}: {name} {cell!r} is not a number.",
                    "Every row needs numeric concentration and response values.",
                ) from None
            if not math.isfinite(v):
                raise DataError(f"{p} line {line_no}: {name} {cell!r} is not a finite number.",
                                "Remove or correct that row.")
            values.append(v)
        if values[0] < 0:
            raise DataError(
                f"{p} line {line_no}: concentration {values[0]:g} is negative.",
                "Concentrations are >= 0 (0 for vehicle wells).",
            )
        if wi is not None and values[2] < 0:
            raise DataError(f"{p} line {line_no}: weight {values[2]:g} is negative.",
                            "Weights are >= 0 (0 ignores the row).")
        conc.append(values[0])
        resp.append(values[1])
        if wi is not None:
            weights.append(values[2])
    if len(conc) < 3:
        raise DataError(
            f"{p} has {len(conc)} data row(s); a dose-response fit needs at least 3.",
            "Add more concentrations (at least 3 points; 5 or more for --model 4pl).",
        )
    if len({c for c in conc if c > 0}) < 2:
        raise DataError(
            f"{p} has fewer than two different positive concentrations.",
            "Test the compound at two or more concentrations.",
        )
    return conc, resp, (weights if wi is not None else None)


def json_number(v: float) -> float | str | None:
    """inf → "inf" (and "-inf"), nan → null; finite numbers unchanged."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def fit_to_json(fit: Any) -> dict[str, Any]:
    return {
        "model": fit.model,
        "ic50": json_number(fit.ic50),
        "ic50_se": json_number(fit.ic50_se),
        "ic50_ci95": [json_number(fit.ic50_ci95[0]), json_number(fit.ic50_ci95[1])],
        "hill": json_number(fit.hill),
        "top": json_number(fit.top),
        "bottom": json_number(fit.bottom),
        "rss": json_number(fit.rss),
        "r2": json_number(fit.r2),
        "converged": fit.converged,
        "infinite": fit.infinite,
        "n": fit.n,
        "message": fit.message,
    }


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "inf"
    return f"{v:.4g}"


def cmd_dose_response(args: argparse.Namespace) -> int:
    from nvir_agent.report.doseresponse import fit_dose_response, scale_warnings

    conc, resp, weights = read_dose_response_csv(args.csv)
    plateaus = "normalised" if args.normalised_plateaus else "free"
    fit = fit_dose_response(conc, resp, model=args.model, weights=weights, plateaus=plateaus)
    warnings = scale_warnings(resp, args.model)
    if args.json:
        print(json.dumps({**fit_to_json(fit), "warnings": warnings}, indent=2, allow_nan=False))
        return 0 if fit.converged else 1
    if not fit.converged:
        print(f"fit failed ({fit.model}, {fit.n} points): {fit.message}")
        return 1
    low, high = fit.ic50_ci95
    print(f"model      {fit.model}{' (weighted)' if weights is not None else ''}, {fit.n} points")
    print(f"IC50       {_fmt(fit.ic50)}" + (" (beyond 10x the highest concentration)" if fit.infinite else ""))
    print(f"  SE       {_fmt(fit.ic50_se)}")
    print(f"  95% CI   {_fmt(low)} – {_fmt(high)}")
    print(f"hill       {_fmt(fit.hill)}")
    print(f"top        {_fmt(fit.top)}")
    print(f"bottom     {_fmt(fit.bottom)}")
    print(f"RSS        {_fmt(fit.rss)}")
    print(f"R²         {_fmt(fit.r2)}")
    if fit.message:
        print(f"note       {fit.message}")
    for w in warnings:
        print(f"warning    {w}")
    return 0


def plate_map_lookup(cfg: Any, db: str | Path) -> Any:
    """plate → PlateMap: the configured plate-map files first, else the map the
    monitor stored; None (the stored maps) when no files are configured."""
    from nvir_agent.monitor.platemap import PlateMapLibrary
    from nvir_agent.monitor.timecourse import load_stored_map
    from nvir_agent.store import StoreReader

    if not cfg.plates.maps:
        return None
    library = PlateMapLibrary(cfg.resolve(cfg.plates.maps), cfg.plates.format)
    with StoreReader(db) as reader:
        stored = {p: load_stored_map(reader, p) for p in reader.plate_names()}

    def maps(plate: str) -> object:
        return library.for_plate(plate) or stored.get(plate)

    return maps


def cmd_report(args: argparse.Namespace) -> int:
    from nvir_agent.config import load_config
    from nvir_agent.report.dili import read_compound_table
    from nvir_agent.report.html import write_report
    from nvir_agent.store import database_url, redact, store_exists

    cfg = load_config(args.config, check_folders=False)
    db = str(Path(args.db).expanduser()) if args.db else database_url(cfg)
    if not store_exists(db):
        raise StoreError(
            f"There is no database at {redact(db)}.",
            "Start the agent (`nvir-agent run`) first, or name the database with --db.",
        )
    labels = read_compound_table(args.compounds) if args.compounds else None
    maps = plate_map_lookup(cfg, db)
    out = write_report(db, args.out, plate=args.plate, day=args.day, compounds=labels,
                       maps=maps, config=cfg)
    print(f"report written: {out}")
    return 0
