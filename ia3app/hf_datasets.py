"""Labelled data kept as a Hugging Face dataset, read through `datasets` and turned into the CSV the app checks.

A dataset is named as a Hub id (``glue``, config ``sst2``, split ``train``), a local folder written by
``Dataset.save_to_disk``, or parquet / JSON-lines files. :func:`dataset_as_csv` loads it, turns every
cell into text (a ClassLabel column into its label names), and writes CSV bytes: the app and the CLI
then read those exactly as an uploaded CSV (the same limits, checks and messages: ia3app.tables.load_csv),
and store them as the user's dataset. Offline, a Hub name is refused with what works instead.

No torch here (`datasets` does not import it); `datasets` itself is imported only when a dataset is read.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from ia3app.errors import UserError

FILE_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
"""Files `datasets` reads here, by suffix (the data page accepts them as uploads too)."""
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
OFFLINE = ("the Hugging Face Hub cannot be reached from this machine (offline); a local folder saved with "
           "save_to_disk, or parquet / JSON-lines files, work without it")


def is_dataset_file(name: str) -> bool:
    return Path(name).suffix.lower() in FILE_FORMATS


def _pick_split(loaded, split: str | None, where: str):
    """One split of a DatasetDict (the one named, else 'train', else the only one)."""
    from datasets import DatasetDict

    if not isinstance(loaded, DatasetDict):
        return loaded
    names = list(loaded)
    if split is None:
        split = "train" if "train" in names else (names[0] if len(names) == 1 else None)
    if split not in names:
        raise UserError(f"{where} has the splits {', '.join(names)}; name one of them"
                        + (f" (there is no split '{split}')" if split else ""))
    return loaded[split]


def _load(source: str, config: str | None, split: str | None, local_ok: bool):
    import datasets

    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or is_dataset_file(source)
    if looks_local:
        if not local_ok:
            raise UserError("a dataset on this server's disk can be named only in single-user mode; upload its "
                            "parquet or JSON-lines file instead, or name a Hub dataset")
        if not path.exists():
            raise UserError(f"there is no file or folder {source}")
        if path.is_dir():
            try:
                return _pick_split(datasets.load_from_disk(str(path)), split, f"the dataset in {source}")
            except FileNotFoundError:
                raise UserError(f"{source} is not a dataset folder saved with save_to_disk (no dataset_info.json "
                                "or state.json in it)") from None
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UserError(f"{path.name} is not a file datasets reads here; use .parquet, .jsonl or .json "
                            "(or upload a CSV)")
        try:
            return datasets.load_dataset(fmt, data_files=str(path), split="train")
        except Exception as exc:  # pyarrow / json errors: the file's fault, worded as such
            raise UserError(f"{path.name} cannot be read as {fmt}: {str(exc).splitlines()[0][:300]}") from None
    if not HUB_ID.fullmatch(source):
        raise UserError(f"'{source}' is neither a Hub dataset name (like 'glue' or 'owner/name') nor a file or "
                        "folder here")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise UserError(OFFLINE)
    try:
        return datasets.load_dataset(source, config, split=split or "train")
    except datasets.exceptions.DatasetNotFoundError:
        raise UserError(f"there is no Hub dataset '{source}' (or it is private)") from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        if "offline" in str(exc).lower() or "connect" in str(exc).lower() or isinstance(exc, (ConnectionError,
                                                                                                TimeoutError)):
            raise UserError(OFFLINE) from None
        raise UserError(f"the Hub dataset '{source}' cannot be loaded: {str(exc).splitlines()[0][:300]}") from None
    except ValueError as exc:  # unknown config or split: datasets lists the ones there are
        raise UserError(f"the Hub dataset '{source}': {str(exc).splitlines()[0][:300]}") from None


def _cell(value, names: list[str] | None) -> str:
    if value is None:
        return ""
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dataset_as_csv(source: str, *, config: str | None = None, split: str | None = None, max_rows: int = 10_000,
                   local_ok: bool = True) -> tuple[str, bytes]:
    """(a file name for the data, its rows as UTF-8 CSV). `source`: a Hub id, a save_to_disk folder or a
    parquet / JSON-lines file; local_ok=False refuses paths on this machine (multi-user mode). UserError
    when it cannot be read, has more than max_rows rows or a column that is not flat (lists, dicts)."""
    source = (source or "").strip()
    if not source:
        raise UserError("name a dataset: a Hub id (like 'glue' with config 'sst2'), a folder saved with "
                        "save_to_disk, or a parquet / JSON-lines file")
    table = _load(source, (config or "").strip() or None, (split or "").strip() or None, local_ok)
    if table.num_rows > max_rows:  # the CSV check's words, before converting rows nobody may train on
        raise UserError(f"the dataset has {table.num_rows:,} rows; the limit is {max_rows:,} rows")
    from datasets import ClassLabel, Value

    names: dict[str, list[str] | None] = {}
    for column, feature in table.features.items():
        if isinstance(feature, ClassLabel):
            names[column] = list(feature.names)
        elif isinstance(feature, Value):
            names[column] = None
        else:
            raise UserError(f"column '{column}' holds {type(feature).__name__.lower()} values, not one text or "
                            "label per row; flatten it (or leave it out) before loading")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(names))
    for row in table:
        writer.writerow([_cell(row[c], names[c]) for c in names])
    base = Path(source).expanduser().stem if Path(source).expanduser().exists() else source
    stem = re.sub(r"[^\w.-]+", "-", "-".join(p for p in (base, config, split) if p)).strip("-")
    return f"{stem or 'dataset'}.csv", out.getvalue().encode("utf-8")
