"""CSV in and out: bytes from a person's upload -> a validated Table, or one specific UserError; rows ->
CSV bytes with spreadsheet formulas neutralised.

Nothing is half-done: either every check passes and a Table comes back, or nothing does. Accepts
UTF-8 with or without a BOM, delimited by comma, semicolon or tab; anything else is refused with
a message saying what to do. Rows are numbered from 1 after the header ("row 3" is the third data
row); messages add the file's line number where a quoted value spans lines.
Every CSV the app hands back goes through write_csv, which neutralises spreadsheet formulas.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

from ia3app.errors import UserError
from ia3app.listing import MAX_LISTED, listed_numbers  # noqa: F401  (offered by the tables face too)

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
MAX_COLUMNS = 200
"""Most columns a file may have: few-shot tasks use a handful; thousands only slow every page down."""
MAX_HEADER_CHARS = 200
"""Longest column name."""
MAX_CELL_CHARS = 100_000
"""Longest value in one cell (the csv parser's own field limit is 131,072)."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

Rows = list[dict[str, str]]


@dataclass
class Table:
    """A parsed CSV: column names in file order, rows as column -> text, and how the file was read."""

    columns: list[str]
    rows: Rows
    delimiter: str = ","
    encoding: str = "utf-8"
    """'utf-8' or 'utf-8-sig' (UTF-8 with a byte-order mark)."""
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""
    """Of the file's bytes as uploaded."""


def rows_of(data: Union[Table, Rows]) -> Rows:
    return data.rows if isinstance(data, Table) else list(data)


def _size(n: int) -> str:
    return f"{n / 1_000_000:g} MB" if n >= 1_000_000 else f"{n / 1_000:g} kB" if n >= 1_000 else f"{n} bytes"


def _read(source: Union[bytes, str, Path], max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        raw = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"no file at {path}")
        if path.stat().st_size > max_bytes:
            raise UserError(f"the file is {_size(path.stat().st_size)}; the limit is {_size(max_bytes)}")
        raw = path.read_bytes()
    if len(raw) > max_bytes:
        raise UserError(f"the file is {_size(len(raw))}; the limit is {_size(max_bytes)}")
    return raw


COMPRESSED = ((b"\x1f\x8b", "gzip", "e.g. gunzip FILE.gz"), (b"BZh", "bzip2", "e.g. bunzip2 FILE.bz2"),
              (b"\xfd7zXZ\x00", "xz", "e.g. unxz FILE.xz"), (b"(\xb5/\xfd", "zstd", "e.g. unzstd FILE.zst"),
              (b"7z\xbc\xaf\x27\x1c", "7-Zip", "e.g. 7z x FILE.7z"))
"""Magic bytes of compressed files: named as such, not as binary files with NUL bytes (issue 23)."""


def _decode(raw: bytes) -> tuple[str, str]:
    save_as = "save it from your spreadsheet as 'CSV UTF-8' and upload that"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"the file is UTF-16 text, not UTF-8; {save_as}")
    if raw.startswith(b"PK\x03\x04"):
        raise UserError(f"this is a zip or Excel (.xlsx) file, not CSV text; {save_as}")
    if raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise UserError(f"this is an old Excel (.xls) file, not CSV text; {save_as}")
    for magic, kind, undo in COMPRESSED:
        if raw.startswith(magic):
            raise UserError(f"this is a {kind}-compressed file, not CSV text; decompress it first ({undo}) and "
                            "upload the CSV inside")
    if b"\x00" in raw:
        first = raw.index(b"\x00")
        raise UserError(f"this is a binary file, not CSV text (it contains NUL bytes, first at byte {first}); {save_as}")
    encoding = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"the file is not UTF-8 text: byte 0x{raw[e.start]:02X} at offset {e.start} (line {line}) cannot be "
            f"decoded (perhaps Windows-1252 or Latin-1); {save_as}"
        ) from None
    controls = len(_CONTROL.findall(text))
    if controls > max(4, len(text) // 100):
        raise UserError(f"this looks like a binary file, not CSV text ({controls} control characters); {save_as}")
    return text, encoding


def _parse(text: str, delimiter: str, limit: int | None = None, strict: bool = True) -> list[tuple[int, list[str]]]:
    """(line number where the row starts, fields) for each non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=strict)
    out: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for fields_ in reader:
            if fields_ and any(f.strip() for f in fields_):
                out.append((line, fields_))
            line = reader.line_num + 1
            if limit is not None and len(out) >= limit:
                break
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise UserError(
                f"a value on line {reader.line_num} is longer than {csv.field_size_limit():,} characters; the most "
                f"one cell may hold is {MAX_CELL_CHARS:,} characters: shorten it (few-shot rows are sentences or "
                "paragraphs, not whole documents)"
            ) from None
        if "unexpected end of data" in str(e):
            raise UserError(f"a double quote opened on line {line} is never closed; close it or remove it") from None
        raise UserError(
            f"the file is not valid CSV on line {reader.line_num}: {e} (a double quote inside a quoted value "
            'is written twice: "")'
        ) from None
    return out


SNIFF_CHARS = 4_000
"""csv.Sniffer reads at most this much: its quote-guessing regular expressions take time that grows with
the square of the text (a 20 kB line of ',"' took 2.5 s; 4 kB takes a twenty-fifth of that)."""


def _detect_delimiter(text: str) -> str:
    sample = text[:20_000]
    candidates = []
    try:
        candidates.append(csv.Sniffer().sniff(sample[:SNIFF_CHARS], delimiters="".join(DELIMITERS)).delimiter)
    except csv.Error:
        pass  # no consistent pattern: fall back to counting fields per row below
    candidates += [d for d in DELIMITERS if d not in candidates]
    best, best_score = ",", (-1, 0)
    for d in candidates:
        try:
            records = _parse(sample, d, limit=50, strict=False)
        except UserError:
            continue
        if len(records) > 1 and text[len(sample):]:
            records = records[:-1]  # the sample may cut the last record short
        if not records:
            continue
        widths = Counter(len(f) for _, f in records)
        consistent = widths[len(records[0][1])] / len(records)
        score = (len(records[0][1]) > 1 and consistent == 1.0, consistent * len(records[0][1]))
        if score > best_score:
            best, best_score = d, score
    return best


def _looks_like_data(header: list[str]) -> bool:
    """A header line that reads as a row of data: numbers only, or a cell that is a sentence."""
    if all(re.fullmatch(r"-?[0-9.,eE+-]+", h) for h in header if h) and any(header):
        return True
    return any(len(h) > 40 or len(h.split()) > 4 for h in header)


def _check_header(header: list[str], max_columns: int) -> None:
    """Column-count and name-length limits, checked on the first line before the rest is parsed."""
    if len(header) > max_columns:
        raise UserError(
            f"the file has {len(header):,} columns; the limit is {max_columns:,}. Keep only the text and label "
            "columns the task needs"
        )
    long_names = [i + 1 for i, h in enumerate(header) if len(h.strip()) > MAX_HEADER_CHARS]
    if long_names:
        raise UserError(
            f"column{'s' if len(long_names) > 1 else ''} {listed_numbers(long_names)} of the header "
            f"{'have names' if len(long_names) > 1 else 'has a name'} longer than {MAX_HEADER_CHARS} characters; "
            "the first line must hold short column names (is a row of data in place of the header?)"
        )


def load_csv(
    source: Union[bytes, str, Path], *, max_bytes: int = 5_000_000, max_rows: int = 10_000,
    max_columns: int = MAX_COLUMNS,
) -> Table:
    """Read a CSV (bytes, or a path as str/Path) into a Table, or raise one UserError saying what is wrong.

    Linear in the file's size: the column limit is checked on the first line before the rest is parsed."""
    raw = _read(source, max_bytes)
    if not raw.strip():
        raise UserError("the file is empty; it needs a header row of column names and at least one row")
    text, encoding = _decode(raw)
    if not text.strip():
        raise UserError("the file is empty; it needs a header row of column names and at least one row")
    start = text.lstrip("\r\n")
    first_line = start[: start.find("\n") + 1 or len(start)]
    if not first_line.strip():  # the reader skips it, and the first data row became the header (issue 23)
        raise UserError("the first line holds only spaces where the column names belong; the first line must name "
                        "the columns (e.g. text,label) with your rows below it")
    if max(first_line.count(d) for d in DELIMITERS) >= max_columns:  # refuse a very wide file before sniffing it
        _check_header(_parse(first_line, max(DELIMITERS, key=first_line.count), limit=1, strict=False)[0][1],
                      max_columns)
    delimiter = _detect_delimiter(text)
    records = _parse(text, delimiter, limit=1)
    _check_header(records[0][1], max_columns)
    records = _parse(text, delimiter)
    warnings: list[str] = []
    header_line, header = records[0]
    header = [h.strip() for h in header]
    if len(records) == 1 and _looks_like_data(header):
        shown = ", ".join(h[:40] + ("…" if len(h) > 40 else "") for h in header[:5])
        raise UserError(
            f"the file has one line only ({shown}), and it reads as data, not column names; the first line "
            "must name the columns (e.g. text,label) with your rows below it"
        )
    if all(re.fullmatch(r"-?[0-9.,eE+-]+", h) for h in header if h) and any(header):
        raise UserError(
            f"the first row ({', '.join(header[:5])}) looks like data, not column names; "
            "add a header row naming each column"
        )
    body = records[1:]
    while header and not header[-1] and all(len(f) < len(header) or not f[len(header) - 1].strip() for _, f in body):
        header.pop()  # a trailing delimiter on every line: an unnamed, empty last column
        body = [(line, f[: len(header)] + f[len(header) + 1 :]) for line, f in body]
        warnings.append("ignored an empty, unnamed last column (a trailing delimiter)")
    problems = []
    blank = [i + 1 for i, h in enumerate(header) if not h]
    if blank:
        problems.append(
            f"column{'s' if len(blank) > 1 else ''} {listed_numbers(blank)} of the header "
            f"{'have' if len(blank) > 1 else 'has'} no name; give every column a name"
        )
    seen: dict[str, int] = {}
    for i, h in enumerate(header):
        if h and h in seen:
            problems.append(f"column name '{h}' appears twice (columns {seen[h] + 1} and {i + 1}); names must be unique")
        seen.setdefault(h, i)
    if problems:
        raise UserError("the header row is not usable: " + "; ".join(problems))
    if not body:
        raise UserError(f"the file has a header ({', '.join(header)}) but no rows below it")
    if len(body) > max_rows:
        raise UserError(f"the file has {len(body):,} rows; the limit is {max_rows:,} rows")
    ragged = [(n, line, len(f)) for n, (line, f) in enumerate(body, start=1) if len(f) != len(header)]
    if ragged:
        shown = "; ".join(f"row {n} (line {line}) has {k}" for n, line, k in ragged[:MAX_LISTED])
        more = f"; and {len(ragged) - MAX_LISTED} more rows" if len(ragged) > MAX_LISTED else ""
        raise UserError(
            f"rows have the wrong number of fields: the header has {len(header)} "
            f"({DELIMITERS[delimiter]}-separated); {shown}{more}. A value containing a "
            f"{DELIMITERS[delimiter]} must be in double quotes"
        )
    long_cells = [(n, header[i], len(v)) for n, (_, f) in enumerate(body, start=1) for i, v in enumerate(f)
                  if len(v) > MAX_CELL_CHARS]
    if long_cells:
        n, column, k = long_cells[0]
        more = f" (and {len(long_cells) - 1} more cells)" if len(long_cells) > 1 else ""
        raise UserError(f"row {n}, column '{column}' holds {k:,} characters{more}; the most one cell may hold is "
                        f"{MAX_CELL_CHARS:,}: shorten it")
    rows = [dict(zip(header, f)) for _, f in body]
    return Table(header, rows, delimiter, encoding, warnings, hashlib.sha256(raw).hexdigest())


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: object) -> str:
    """Prefix a cell a spreadsheet would run as a formula (= + - @, tab, CR) with a single quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(rows: Iterable[dict], columns: list[str]) -> bytes:
    """Rows -> UTF-8 CSV bytes (comma, CRLF, header first), every cell and name formula-neutralised."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow([neutralise_formula(c) for c in columns])
    for r in rows:
        writer.writerow([neutralise_formula(r.get(c, "")) for c in columns])
    return buf.getvalue().encode("utf-8")
