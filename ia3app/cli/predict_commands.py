"""`python -m ia3app predict` and `suggest`: an adapter used through the serving engine, on typed rows or a
CSV (predictions as CSV or JSON lines), or on an unlabelled pool (the rows to label next)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ia3app.cli.data_args import pairs, read_table
from ia3app.cli.output import quiet_transformers
from ia3app.errors import UserError


def _write_predictions(columns, rows, out: str | None, fmt: str) -> None:
    from ia3app.tables import write_csv

    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        data = text.encode("utf-8")
    else:
        data = write_csv(rows, columns)
    if out:
        Path(out).write_bytes(data)
    else:
        sys.stdout.write(data.decode("utf-8"))


def cmd_predict(args) -> int:
    quiet_transformers()
    from ia3app.serving.engine import ServingEngine, prediction_table

    engine = ServingEngine(device=args.device, max_batch_rows=args.batch_size, max_wait_ms=0)
    info = engine.info(args.adapter)
    if args.csv:
        table = read_table(args.csv)
        columns, rows = table.columns, table.rows
    elif args.text or args.column:
        used = sorted(info.template.columns_used())
        if args.text:
            if len(used) != 1:
                raise UserError(
                    f"this adapter's template reads columns {', '.join(used)}; pass each with --column NAME=VALUE"
                )
            rows = [{used[0]: t} for t in args.text]
        else:
            rows = [pairs(args.column, "--column")]
        columns = list(rows[0])
    else:
        raise UserError("give rows to predict: --text TEXT, --column NAME=VALUE or --csv FILE")
    try:
        predictions = engine.predict(args.adapter, rows)
    finally:
        engine.close()
    fmt = args.format or ("jsonl" if (args.out or "").endswith((".jsonl", ".json")) or not args.csv else "csv")
    if fmt == "jsonl":
        out_rows = [{**row, **p.as_dict()} for row, p in zip(rows, predictions)]  # the one prediction shape
        _write_predictions(None, out_rows, args.out, "jsonl")
    else:
        cols, out_rows = prediction_table(info, columns, rows, predictions)
        _write_predictions(cols, out_rows, args.out, "csv")
    return 0


def suggestion_table(result) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a SuggestResult for a CSV or a printout: rank, pool row (1-based), margin, the top two
    answers with their probabilities, then the row's own columns."""
    columns = ["rank", "pool_row", "margin", "first", "p_first", "second", "p_second"]
    rows = []
    for rank, s in enumerate(result.suggestions, start=1):
        first, second = (s.top + [{"label": "", "probability": 0.0}])[:2]
        rows.append({"rank": rank, "pool_row": s.index + 1, "margin": f"{s.margin:.4f}", "first": first["label"],
                     "p_first": f"{first['probability']:.4f}", "second": second["label"],
                     "p_second": f"{second['probability']:.4f}", **s.row})
    extra = list(dict.fromkeys(k for s in result.suggestions for k in s.row))
    return columns + extra, rows


def cmd_suggest(args) -> int:
    quiet_transformers()
    from ia3app.jobtypes import dumps
    from ia3app.serving.engine import ServingEngine
    from ia3app.serving.suggest import suggest
    from ia3app.tables import pool_rows, write_csv

    engine = ServingEngine(device=args.device, max_batch_rows=args.batch_size, max_wait_ms=0)
    try:
        template = engine.info(args.adapter).template
        table = read_table(args.pool)
        rows = pool_rows(table, sorted(template.columns_used(include_target=False)), template.label_column)
        result = suggest(engine, args.adapter, rows, args.n)
    finally:
        engine.close()
    print(f"scored {result.scored} pool rows ({result.rows_per_s:.1f} rows/s); suggested {len(result.suggestions)} "
          f"by {result.method}", file=sys.stderr)
    if args.out and args.out.endswith(".json"):
        Path(args.out).write_text(dumps(result, indent=2), encoding="utf-8")
        return 0
    columns, out_rows = suggestion_table(result)
    if args.out:
        Path(args.out).write_bytes(write_csv(out_rows, columns))
        return 0
    for row in out_rows:
        text = " | ".join(str(row[c]) for c in columns[7:])
        print(f"{row['rank']}. pool row {row['pool_row']}: {row['first']} {row['p_first']} vs {row['second']} "
              f"{row['p_second']} (margin {row['margin']}): {text}")
    return 0
