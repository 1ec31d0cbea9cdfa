"""The prediction service: cached base models, one merged adapter each, safe under concurrency.

A :class:`Predictor` keeps up to `max_models` backbones in memory (least recently used goes
first), each with its (IA)^3 handle. A request names an adapter folder; if that adapter is not
the one merged into its backbone, the backbone's weights are restored, the adapter's vectors
loaded and merged ("pushed down"), so every prediction runs at exactly the base model's cost.
Asking again for the same adapter reuses everything: no reload, no re-merge. One lock
serialises requests, since a merge rewrites shared weights.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ia3app.errors import UserError
from ia3app.scoring import score_choices
from ia3app.templates import TemplateSpec, render_all, validate


@dataclass
class AdapterInfo:
    """What serving needs from an adapter folder (read once per folder version)."""

    key: tuple
    """(resolved folder, mtime and size of adapter.safetensors): changes when the file does."""
    base_model: str
    revision: str | None
    template: TemplateSpec
    choices: list[str]
    """Class names: the fixed choices, or 'choice 1'... for per-row choices."""
    max_length: int
    vectors: dict
    config: dict


def _key(adapter_dir: Path) -> tuple:
    weights = adapter_dir / "adapter.safetensors"
    if not weights.is_file():
        from ia3app.adapter_io import load_adapter

        load_adapter(adapter_dir)  # raises the specific UserError (no folder, a pickle, a PEFT folder...)
        raise UserError(f"{adapter_dir} is not an adapter folder: adapter.safetensors is missing")
    stat = weights.stat()
    return (str(adapter_dir.resolve()), stat.st_mtime_ns, stat.st_size)


def read_adapter(adapter_dir: str | Path) -> AdapterInfo:
    """Read an adapter folder written by pipeline.run_job / save_adapter (safetensors only)."""
    from ia3app.adapter_io import load_adapter

    adapter_dir = Path(adapter_dir)
    key = _key(adapter_dir)
    vectors, config = load_adapter(adapter_dir)
    extra = config  # save_adapter stores template, choices, recipe, metrics at the top level
    if "template" not in extra:
        raise UserError(
            f"the adapter in {adapter_dir} records no template, so rows cannot be turned into inputs; "
            "train it with ia3app (python -m ia3app train) or add 'template' to ia3_config.json"
        )
    template = TemplateSpec.from_dict(extra["template"])
    choices = extra.get("choices") or list(template.choices or [])
    return AdapterInfo(
        key=key,
        base_model=config["base_model"],
        revision=config.get("revision"),
        template=template,
        choices=list(choices),
        max_length=int((extra.get("recipe") or {}).get("max_length", 256)),
        vectors=vectors,
        config=config,
    )


def _label_value(template: TemplateSpec, choice_index: int, choice: str) -> Any:
    """The label a person would write for this answer: the label value mapping to the choice."""
    if template.per_row:
        return choice_index
    for value, text in (template.label_map or {}).items():
        if text == choice:
            return value
    return choice


class _Slot:
    def __init__(self, loaded, handle) -> None:
        self.loaded = loaded
        self.handle = handle
        self.active: tuple | None = None  # key of the adapter merged into the weights


class Predictor:
    """Cached base models + merged adapters. Thread-safe; one request at a time per Predictor."""

    def __init__(self, max_models: int = 2, device: str | None = None, batch_size: int = 16) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self.device = device
        self.batch_size = batch_size
        self.loads = 0
        """Base models loaded so far (a cache hit does not count)."""
        self.switches = 0
        """Times an adapter was merged into a backbone (a repeat request does not count)."""
        self._slots: OrderedDict[tuple, _Slot] = OrderedDict()
        self._adapters: OrderedDict[str, AdapterInfo] = OrderedDict()
        self._lock = threading.Lock()

    # -- caches ---------------------------------------------------------------------------------
    def _adapter(self, adapter_dir: str | Path) -> AdapterInfo:
        path = Path(adapter_dir)
        key = _key(path)
        info = self._adapters.get(key[0])
        if info is None or info.key != key:
            info = read_adapter(path)
            self._adapters[key[0]] = info
        self._adapters.move_to_end(key[0])
        while len(self._adapters) > 64:
            self._adapters.popitem(last=False)
        return info

    def _slot(self, info: AdapterInfo) -> _Slot:
        from ia3app.ia3 import inject
        from ia3app.models import default_device, load_model

        device = self.device or default_device()
        key = (info.base_model, info.revision, device)
        slot = self._slots.get(key)
        if slot is None:
            while len(self._slots) >= self.max_models:
                self._slots.popitem(last=False)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            loaded = load_model(info.base_model, info.revision, device=device)
            self.loads += 1
            slot = self._slots[key] = _Slot(loaded, inject(loaded.model))
        self._slots.move_to_end(key)
        return slot

    def _activate(self, slot: _Slot, info: AdapterInfo) -> None:
        from ia3app.adapter_io import fit_problems

        if slot.active == info.key:
            return
        problems = fit_problems(slot.handle, info.config)
        if problems:
            raise UserError(f"the adapter does not fit {info.base_model!r}: " + "; ".join(problems))
        slot.handle.restore()
        slot.active = None
        slot.handle.load_vectors(info.vectors)
        slot.handle.merge()
        slot.active = info.key
        self.switches += 1

    # -- serving --------------------------------------------------------------------------------
    def predict(self, adapter_dir: str | Path, rows: list[dict]) -> list[dict]:
        """One dict per row: label (as the training data writes it), choice (text), probs {choice: p}."""
        if not rows:
            return []
        with self._lock:
            info = self._adapter(adapter_dir)
            spec = info.template
            columns = list(dict.fromkeys(k for row in rows for k in row))
            validate(spec, columns, rows, require_labels=False)
            # Labels in the rows are ignored: predictions never depend on them.
            examples = render_all(spec, [{k: v for k, v in r.items() if k != spec.label_column} for r in rows])
            slot = self._slot(info)
            self._activate(slot, info)
            scored = score_choices(
                slot.loaded.model, slot.loaded.tokenizer, examples, batch_size=self.batch_size, max_length=info.max_length
            )
        out = []
        for ex, s in zip(examples, scored):
            choice = ex.choices[s.pred]
            out.append(
                {
                    "label": _label_value(spec, s.pred, choice),
                    "choice": choice,
                    "probs": {c: float(p) for c, p in zip(ex.choices, s.probs)},
                }
            )
        return out

    def predict_csv(self, adapter_dir: str | Path, data: bytes) -> bytes:
        """A CSV in, the same CSV out with prediction, predicted_choice and one probability column per choice."""
        from ia3app.data import load_csv, write_csv

        table = load_csv(data)
        predictions = self.predict(adapter_dir, table.rows)
        columns, rows = prediction_table(self._adapter(adapter_dir), table.columns, table.rows, predictions)
        return write_csv(rows, columns)


def prediction_table(info: AdapterInfo, columns: list[str], rows: list[dict], predictions: list[dict]):
    """(columns, rows): the input columns, then prediction, predicted_choice and prob_<choice> per choice
    (prob_1, prob_2... for per-row choices), probabilities as text with 6 decimals."""
    per_row = info.template.per_row
    n_choices = max((len(p["probs"]) for p in predictions), default=0)
    prob_columns = [f"prob_{i + 1}" for i in range(n_choices)] if per_row else [f"prob_{c}" for c in info.choices]
    out_rows = []
    for row, pred in zip(rows, predictions):
        probs = list(pred["probs"].values()) if per_row else [pred["probs"].get(c, 0.0) for c in info.choices]
        out_rows.append(
            {
                **row,
                "prediction": pred["label"],
                "predicted_choice": pred["choice"],
                **{col: f"{p:.6f}" for col, p in zip(prob_columns, probs)},
            }
        )
    return list(columns) + ["prediction", "predicted_choice"] + prob_columns, out_rows
