"""The serving engine: one backbone per (model, revision, device, dtype), every adapter beside it,
concurrent requests for different adapters batched into one mixed-task forward.

    from ia3app.serving.engine import ServingEngine

    engine = ServingEngine(max_wait_ms=3, max_batch_rows=32, adapter_budget_mb=1024)
    preds = engine.predict("data/adapters/7", [{"sentence": "a fine film"}])  # list[Prediction]
    future = engine.submit("data/adapters/9", rows)  # concurrent.futures.Future[list[Prediction]]
    preds[0].label, preds[0].choice, preds[0].probabilities   # as_dict(): the JSON the HTTP API sends
    engine.preload("data/adapters/9")                         # backbone loaded and fit checked now
    engine.stats()                                            # per backbone: batches, bank, memory
    engine.close()

Thread-safe: call ``predict``/``submit`` from any number of threads (a web server's pool, a Ray
Serve replica's request handlers). What happens to a request:

1. In the caller's thread: the adapter folder's info is read (cached; re-read when its files'
   mtime/size/inode change), the rows are validated and rendered with the adapter's template (the
   same ``templates.validate``/``render_all`` as training and evaluation), and the backbone is
   loaded through ``models.load_model`` on first use (at most ``max_models`` kept, least recently
   used closed first). A missing folder, an adapter that does not fit its backbone or a bad row
   fails THIS request (its Future carries the UserError); nothing is queued.
2. The rows join the backbone's queue, split into parts of at most ``max_batch_rows`` rows. One
   batcher thread per backbone takes what has arrived (waiting up to ``max_wait_ms`` for more
   once it has seen concurrent traffic; a lone client never waits), up to ``max_batch_rows`` rows,
   puts every adapter of the batch into the device bank (:class:`~ia3app.serving.bank.AdapterBank`,
   LRU within ``adapter_budget_mb``) and scores the batch sorted by length.
3. Switching policy: when a batch names one adapter and nothing else is queued, and that adapter
   is already merged or has been the only one for ``merge_after`` batches in a row, the batch runs
   on merged copies of the wrapped weights (:class:`~ia3app.serving.bank.MergedWeights`: the base
   model's cost; the copies cost the wrapped weights' bytes once, see ``stats()``). Otherwise it
   runs unmerged, each row gathering its own adapter's vectors. Alternating adapters therefore
   never pay a merge per batch; a steady single-adapter stream (a results page) is merged.
4. Each caller gets exactly its rows back. If a batch fails, its requests are re-run one by one so
   the failure stays with the request that caused it.

Scores equal scoring the adapter alone with a merged model up to float rounding: the merged and
unmerged paths differ by at most :data:`MERGED_TOLERANCE` for the backbone's dtype.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ia3app.serving.bank import AdapterInfo, adapter_key, read_adapter
from ia3app.errors import UserError
from ia3app.example import Example
from ia3app.serving.lane import Lane as _Lane
from ia3app.evaluation.calibration import UNSURE
from ia3app.serving.interface import Serving
from ia3app.backbones.threads import cpu_threads
from ia3app.serving.lane import Prediction, label_for_choice

__all__ = ["MERGED_TOLERANCE", "Prediction", "ServingConfig", "ServingEngine", "prediction_table", "render_rows"]


MERGED_TOLERANCE = {
    "fp32": {"score": 5e-5, "probability": 1e-5},
    "bf16": {"score": 0.3, "probability": 0.06},
}
"""The most a row's answers may differ between the merged path (the adapter folded into the weights) and
the unmerged one (the layers multiply by the gathered vectors): |score| (mean log-probability per answer
token) and |probability|. Both compute the same function and round differently; in bf16 the merged weights
round once more (W·v to 8 bits of mantissa) and the unmerged path rounds each product. Set from
bench/bench_merge_tolerance.py (bench/RESULTS.md): largest differences over 192 rows × 3 adapters on tiny T0-
and Llama-shaped models, fp32 1.3e-5 / 1.9e-6, bf16 0.14 / 0.029, with every prediction the same;
tests/test_serving.py checks the engine's two paths against these bounds."""


@dataclass
class ServingConfig:
    """How the engine batches and what it keeps in memory."""

    device: str | None = None
    """cpu, cuda, cuda:1 ... (default: cuda when a GPU is visible)."""
    dtype: str | None = "auto"
    """Backbone dtype: fp32, bf16, fp16; "auto": bf16 on a GPU that supports it, else fp32."""
    max_wait_ms: float = 3.0
    """How long the batcher waits for more requests once traffic is concurrent."""
    max_batch_rows: int = 32
    """Most rows (examples, all their choices) in one forward."""
    adapter_budget_mb: float = 1024.0
    """Device memory for resident adapters per backbone; least recently used leave first."""
    max_models: int = 2
    """Backbones kept loaded at once."""
    merge: str = "auto"
    """auto: the merged fast path for single-adapter traffic (see the module doc); never: always unmerged."""
    merge_after: int = 2
    """Consecutive single-adapter batches before an adapter not yet merged gets merged."""
    threads: int = 0
    """torch threads of each batcher thread; 0: the IA3APP_SERVE_THREADS setting, else 1 (ia3app.backbones.threads)."""

    def __post_init__(self) -> None:
        if self.threads == 0:
            self.threads = cpu_threads("serve")
        problems = []
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_batch_rows < 1:
            problems.append(f"max_batch_rows must be >= 1, got {self.max_batch_rows}")
        if self.adapter_budget_mb <= 0:
            problems.append(f"adapter_budget_mb must be > 0, got {self.adapter_budget_mb}")
        if self.max_models < 1:
            problems.append(f"max_models must be >= 1, got {self.max_models}")
        if self.merge not in ("auto", "never"):
            problems.append(f"merge must be 'auto' or 'never', got {self.merge!r}")
        if self.merge_after < 1:
            problems.append(f"merge_after must be >= 1, got {self.merge_after}")
        if self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if problems:
            raise UserError("serving settings: " + "; ".join(problems))


def render_rows(info: AdapterInfo, rows: Any) -> list[Example]:
    """Validate and render rows with the adapter's template (labels in the rows are ignored)."""
    from ia3app.templates.rendering import render_all, validate

    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise UserError("rows must be a list of objects, each mapping the template's column names to texts")
    if not rows:
        return []
    spec = info.template
    columns = list(dict.fromkeys(k for row in rows for k in row))
    validate(spec, columns, list(rows), require_labels=False, source="rows sent")  # an API call has no file
    return render_all(spec, [{k: v for k, v in r.items() if k != spec.label_column} for r in rows])


def fit_rows(info: AdapterInfo, rows: list[dict], examples: list[Example], tokenizer) -> list[Example]:
    """The rendered rows made model-ready as training made them: fitted to the adapter's max_length
    (ia3app.templates.truncate), then wrapped in the chat template when the adapter's template asks."""
    from ia3app.templates.chat import wrap_examples
    from ia3app.templates.truncate import fit_examples

    spec = info.template
    unlabelled = [{k: v for k, v in r.items() if k != spec.label_column} for r in rows]
    return wrap_examples(tokenizer, fit_examples(spec, unlabelled, examples, tokenizer, info.max_length).examples,
                         spec.chat)


class ServingEngine:
    """Predictions for any number of adapters and callers; see the module doc."""

    def __init__(self, config: ServingConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or ServingConfig(), **overrides)
        self.loads = 0
        """Backbones loaded so far."""
        self._lanes: OrderedDict[tuple, _Lane] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}
        self._infos: OrderedDict[str, AdapterInfo] = OrderedDict()
        self._lock = threading.Lock()

    def info(self, adapter_dir: str | Path) -> AdapterInfo:
        """The adapter folder's info (cached until its files change); UserError when it is not one."""
        key = adapter_key(adapter_dir)
        with self._lock:
            info = self._infos.get(key[0])
        if info is None or info.key != key:
            info, _ = read_adapter(adapter_dir)
            with self._lock:
                self._infos[info.path] = info
                while len(self._infos) > 4096:
                    self._infos.popitem(last=False)
        return info

    def _lane_key(self, info: AdapterInfo) -> tuple:
        """(model, revision, device, dtype name): one backbone each. "auto": models.weights_dtype's choice."""
        import torch

        from ia3app.backbones.loading import default_device, weights_dtype

        device = str(self.config.device or default_device())
        dtype = self.config.dtype or "auto"
        if dtype == "auto":
            names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
            dtype = names[weights_dtype("auto", device)]
        return (info.base_model, info.revision, device, dtype)

    def _lane(self, info: AdapterInfo) -> _Lane:
        key = self._lane_key(info)
        with self._lock:
            lane = self._lanes.get(key)
            if lane is not None:
                self._lanes.move_to_end(key)
                return lane
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per backbone; other backbones' requests go on meanwhile
            with self._lock:
                if key in self._lanes:
                    return self._lanes[key]
            from ia3app.backbones.loading import load_model

            loaded = load_model(info.base_model, revision=info.revision, device=key[2], dtype=key[3])
            lane = _Lane(key, loaded, self.config)
            with self._lock:
                self.loads += 1
                while len(self._lanes) >= self.config.max_models:
                    _, old = self._lanes.popitem(last=False)
                    old.close()  # finishes what it has queued, then its memory goes with its thread
                self._lanes[key] = lane
                self._loading.pop(key, None)
            return lane

    def submit(self, adapter_dir: str | Path, rows: list[dict], embed: bool = False,
               client: Hashable | None = None) -> Future:
        """Queue rows for an adapter; the Future gives one Prediction per row (or this request's error).
        ``embed``: each Prediction also carries the input's representation (Prediction.embedding).
        The rows are rendered and tokenized in the calling thread (call it off an event loop); the
        batcher serves ``client``s (e.g. users) in turn, so one client's many rows wait for the others."""
        try:
            info = self.info(adapter_dir)
            examples = render_rows(info, rows)
            fitted = False
            while True:
                lane = self._lane(info)
                lane.check_fit(info)
                if not fitted:  # as in training: a long row loses the end of its longest field, not its question
                    examples, fitted = fit_rows(info, rows, examples, lane.loaded.tokenizer), True
                if not examples:
                    future: Future = Future()
                    future.set_result([])
                    return future
                future = lane.submit(info, examples, embed, client)
                if future is not None:
                    return future
        except Exception as exc:  # the caller's Future carries it, as for failures inside a batch
            future = Future()
            future.set_exception(exc)
            return future

    def preload(self, adapter_dir: str | Path) -> AdapterInfo:
        """Read the adapter, load its backbone and check the fit now (e.g. a Ray Serve replica warming up);
        its vectors enter the bank with its first batch. Raises the request's UserError, if any."""
        info = self.info(adapter_dir)
        self._lane(info).check_fit(info)
        return info

    def predict(self, adapter_dir: str | Path, rows: list[dict], timeout: float | None = None,
                embed: bool = False) -> list[Prediction]:
        """One Prediction per row (blocks until its batch has run)."""
        return self.submit(adapter_dir, rows, embed).result(timeout)

    def predict_csv(self, adapter_dir: str | Path, data: bytes, *, max_bytes: int = 5_000_000,
                    max_rows: int = 10_000) -> bytes:
        """A CSV in, the same CSV out with prediction, predicted_choice and one probability column per choice."""
        return predict_csv(self, adapter_dir, data, max_bytes=max_bytes, max_rows=max_rows)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lanes = list(self._lanes.values())
        return {"models_loaded": self.loads, "backbones": [lane.stats() for lane in lanes]}

    def close(self) -> None:
        """Stop the batcher threads once they have served what is queued."""
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.close(wait=True)


def predict_csv(engine: Serving, adapter_dir: str | Path, data: bytes, *, max_bytes: int, max_rows: int) -> bytes:
    """CSV predictions through any engine with predict() and info() (this one, or the Ray Serve client)."""
    from ia3app.tables import load_csv, write_csv

    table = load_csv(data, max_bytes=max_bytes, max_rows=max_rows)
    predictions = engine.predict(adapter_dir, table.rows)
    columns, rows = prediction_table(engine.info(adapter_dir), table.columns, table.rows, predictions)
    return write_csv(rows, columns)


def prediction_table(info: AdapterInfo, columns: list[str], rows: list[dict], predictions: list[Prediction]):
    """(columns, rows): the input columns, then prediction (the label as the data writes it, or
    "unsure" when the confidence is below the adapter's abstain threshold), predicted_choice (the
    answer's words; empty when unsure) and prob_<choice> per choice — for per-row choices
    prob_<label> in the data's own numbering (prob_0, prob_1 or the template's choice_labels), the
    same numbering as the prediction column — then confidence (the top probability) and best_guess
    (the most likely label, also when unsure). Probabilities (calibrated when the adapter has a
    temperature) as text with 6 decimals."""
    per_row = info.template.per_row
    n_choices = max((len(p.probabilities) for p in predictions), default=0)
    prob_columns = ([f"prob_{label_for_choice(info, i, '')}" for i in range(n_choices)] if per_row
                    else [f"prob_{c}" for c in info.choices])
    out_rows = []
    for row, pred in zip(rows, predictions):
        probs = list(pred.probabilities.values()) if per_row else [pred.probabilities.get(c, 0.0) for c in info.choices]
        out_rows.append({**row, "prediction": UNSURE if pred.unsure else pred.label,
                         "predicted_choice": "" if pred.unsure else pred.choice,
                         **{col: f"{p:.6f}" for col, p in zip(prob_columns, probs)},
                         "confidence": f"{pred.confidence:.6f}", "best_guess": pred.label})
    return (list(columns) + ["prediction", "predicted_choice"] + prob_columns + ["confidence", "best_guess"],
            out_rows)
