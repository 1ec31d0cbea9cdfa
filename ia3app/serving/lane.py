"""One backbone of the serving engine: its (IA)^3 handle, adapter bank, merged copies, request queue
and batcher thread (see :mod:`ia3app.serving.engine` for the policy; this module is its machinery)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ia3app.evaluation.calibration import UNSURE, abstain, apply_temperature
from ia3app.serving.bank import AdapterBank, AdapterInfo, MergedWeights
from ia3app.errors import UserError
from ia3app.example import Example

if TYPE_CHECKING:
    from ia3app.serving.engine import ServingConfig

log = logging.getLogger("ia3app.serving.engine")


@dataclass
class Prediction:
    """One row's answer."""

    label: Any
    """The label as the training data writes it (the label value mapping to the choice; an index for per-row choices)."""
    choice: str
    """The chosen answer's text."""
    probabilities: dict[str, float]
    """Softmax over the choices' length-normalised log-probabilities, by choice text, divided by the
    adapter's calibration temperature when it has one (ia3_config.json "calibration")."""
    scores: list[float] = field(repr=False)
    """β per choice (mean token log-probability), in choice order."""
    unsure: bool = False
    """The top probability is below the adapter's abstain threshold: the answer is "unsure"
    (label and choice still hold the model's best guess, for callers that want it)."""
    embedding: list[float] | None = field(default=None, repr=False)
    """Asked for with ``embed=True``: the input's mean-pooled last hidden state under this adapter
    (ia3app.evaluation.scoring.ChoiceLogProbs.pooled); not part of as_dict()."""

    @property
    def confidence(self) -> float:
        """The top (calibrated) probability."""
        return max(self.probabilities.values(), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """The one JSON shape of a prediction (the JSON API, gradio's /predict, the CLI's jsonl): label and
        choice, or label "unsure" (choice null, the best guess beside it) when the confidence is below the
        adapter's threshold."""
        if self.unsure:
            return {"label": UNSURE, "choice": None, "probabilities": self.probabilities,
                    "confidence": self.confidence, "unsure": True,
                    "best_guess": {"label": self.label, "choice": self.choice}}
        return {"label": self.label, "choice": self.choice, "probabilities": self.probabilities,
                "confidence": self.confidence, "unsure": False}


def label_for_choice(info: AdapterInfo, choice_index: int, choice: str) -> Any:
    if info.template.per_row:  # the data's own numbering: its choice_labels ("1", "2", "A"...) or 0-based
        labels = info.template.choice_labels
        return labels[choice_index] if labels and choice_index < len(labels) else choice_index
    for value, text in (info.template.label_map or {}).items():
        if text == choice:
            return value
    return choice


PAD_SLACK = 1.25
"""A forward pass pads at most this much beyond its rows' own lengths (see length_chunks)."""


def length_chunks(lengths: list[int], slack: float = PAD_SLACK) -> list[list[int]]:
    """Indices grouped for forward passes: sorted by length, a new group whenever padding every row
    to the longest would cost more than `slack` times the rows' own lengths. A batch of similar rows
    stays one forward (the GPU case); short and long rows of a mixed batch do not pad each other
    (the CPU pays for every padded token)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks: list[list[int]] = []
    total = 0
    for i in order:
        n = lengths[i]
        if chunks and (len(chunks[-1]) + 1) * n <= slack * (total + n):
            chunks[-1].append(i)
            total += n
        else:
            chunks.append([i])
            total = n
    return chunks


class _Request:
    """One caller's rows and Future; its parts complete it together (or the first failure fails it)."""

    def __init__(self, info: AdapterInfo, n_rows: int, n_parts: int, embed: bool = False) -> None:
        self.info = info
        self.embed = embed
        self.future: Future = Future()
        self._results: list[Prediction | None] = [None] * n_rows
        self._left = n_parts
        self._lock = threading.Lock()

    def done(self) -> bool:
        return self.future.done()

    def deliver(self, start: int, predictions: list[Prediction]) -> None:
        with self._lock:
            if self.future.done():
                return
            self._results[start : start + len(predictions)] = predictions
            self._left -= 1
            if self._left == 0:
                self.future.set_result(self._results)

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if not self.future.done():
                self.future.set_exception(exc)


@dataclass
class _Part:
    request: _Request
    start: int
    examples: list[Example]
    arrived: float

    @property
    def info(self) -> AdapterInfo:
        return self.request.info


class Lane:
    """One backbone: its (IA)^3 handle, adapter bank, merged copies, queue and batcher thread."""

    def __init__(self, key: tuple, loaded, config: ServingConfig) -> None:
        from ia3app.adapters.ia3 import inject

        self.key, self.loaded, self.config = key, loaded, config
        self.handle = inject(loaded.model)
        self.bank = AdapterBank(self.handle, int(config.adapter_budget_mb * 2**20))
        self.merged = MergedWeights(self.handle)
        self.counts: Counter = Counter()
        self._fits: dict[tuple, list[str]] = {}
        self._queues: OrderedDict[Hashable, deque[_Part]] = OrderedDict()
        """Queued parts per client (a user, or one request when no client is named), served in turn."""
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._concurrent = False  # the last batch held more than one request: waiting pays off
        self._streak: tuple[Any, int] = (None, 0)
        self._thread = threading.Thread(target=self._run, name=f"ia3app-serve-{key[0]}", daemon=True)
        self._thread.start()

    # -- caller side ----------------------------------------------------------------------------
    def check_fit(self, info: AdapterInfo) -> None:
        from ia3app.adapters.files import fit_problems

        problems = self._fits.get(info.key)
        if problems is None:
            problems = self._fits[info.key] = fit_problems(self.handle, info.config)
        if problems:
            raise UserError(f"the adapter in {info.path} does not fit {info.base_model!r}: " + "; ".join(problems))

    def submit(self, info: AdapterInfo, examples: list[Example], embed: bool = False,
               client: Hashable | None = None) -> Future | None:
        """Queue the rows; None when the lane has been closed (the engine then opens a new one).

        Parts are served per ``client`` in turn (round robin: a client's next part waits until every
        other waiting client has had one), so one caller's thousands of rows cannot hold the engine for
        everyone; within a client, first come first served. No client: the request is its own."""
        size = self.config.max_batch_rows
        request = _Request(info, len(examples), (len(examples) + size - 1) // size, embed)
        now = time.monotonic()
        with self._cond:
            if self._closed:
                return None
            queue = self._queues.setdefault(("request", id(request)) if client is None else client, deque())
            for start in range(0, len(examples), size):
                queue.append(_Part(request, start, examples[start : start + size], now))
                self._queued_rows += len(queue[-1].examples)
            self._cond.notify()
        return request.future

    def close(self, wait: bool = False) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            self._thread.join()

    # -- batcher side ---------------------------------------------------------------------------
    def _take(self) -> tuple[list[_Part], bool] | None:
        """The next batch (clients in turn, each client's parts in order) and whether requests for other
        adapters stay queued; None: closed."""
        cfg = self.config
        with self._cond:
            while not self._queues and not self._closed:
                self._cond.wait()
            if not self._queues:
                return None
            if self._concurrent and cfg.max_wait_ms > 0:
                deadline = min(q[0].arrived for q in self._queues.values()) + cfg.max_wait_ms / 1000
                while not self._closed and self._queued_rows < cfg.max_batch_rows:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch: list[_Part] = []
            rows, keys = 0, {}  # keys: adapter path -> file key in this batch
            took = True
            while took:  # one part per client per round, until the batch is full
                took = False
                for client in list(self._queues):
                    queue = self._queues[client]
                    part, n = queue[0], len(queue[0].examples)
                    path, key = part.info.path, part.info.key
                    if batch and (rows + n > cfg.max_batch_rows or keys.get(path, key) != key
                                  or (path not in keys and len(keys) >= self.bank.max_slots)):
                        continue
                    batch.append(queue.popleft())
                    rows += n
                    self._queued_rows -= n
                    keys[path] = key
                    took = True
                    if queue:
                        self._queues.move_to_end(client)  # its next part waits for the others' turn
                    else:
                        del self._queues[client]
            others = any(p.info.key != batch[0].info.key for q in self._queues.values() for p in q)
        return batch, others

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self.config.threads)  # this thread's own setting (bench/bench_threads.py)
        while (taken := self._take()) is not None:
            batch, others = taken
            try:
                self._process(batch, others)
            except BaseException as exc:  # a bug: these callers get it (with its traceback), serving goes on
                log.exception("serving batch failed")
                for part in batch:
                    part.request.fail(exc)

    def _process(self, batch: list[_Part], others_queued: bool) -> None:
        pinned = {p.info.path for p in batch}
        rows: dict[tuple, int] = {}
        live = []
        for part in batch:
            if part.request.done():  # another part of its request failed already
                continue
            key = part.info.key
            if key not in rows:
                try:
                    rows[key] = self.bank.ensure(part.info, pinned)
                except Exception as exc:  # unreadable or misfit vectors: this adapter's requests only
                    part.request.fail(exc)
                    continue
            live.append(part)
        if not live:
            return
        self._concurrent = len({id(p.request) for p in live}) > 1
        keys = {p.info.key for p in live}
        key = next(iter(keys))
        single = len(keys) == 1 and not others_queued
        count = self._streak[1] + 1 if single and self._streak[0] == key else 1
        self._streak = (key, count) if single else (None, 0)
        merged = self.config.merge == "auto" and single and (self.merged.active == key or count >= self.config.merge_after)
        if merged:
            if self.merged.active != key:
                self.merged.load(key, self.bank.vectors(rows[key]))
            self.merged.install()
        else:
            self.merged.uninstall()
        self.counts.update(batches=1, merged_batches=int(merged), mixed_batches=int(len(keys) > 1),
                           requests=len({id(p.request) for p in live}), rows=sum(len(p.examples) for p in live))
        by_length: dict[int, list[_Part]] = {}
        for part in live:
            by_length.setdefault(part.info.max_length, []).append(part)
        for max_length, parts in by_length.items():
            self._score(parts, max_length, None if merged else rows)

    def _score(self, parts: list[_Part], max_length: int, rows: dict[tuple, int] | None) -> None:
        """Score parts in one forward; if that fails, each part alone (the failure stays with its request)."""
        from ia3app.evaluation.scoring import score_choices

        examples = [ex for p in parts for ex in p.examples]
        names = None if rows is None else [rows[p.info.key] for p in parts for _ in p.examples]
        scored: list = [None] * len(examples)
        embed = any(p.request.embed for p in parts)
        try:
            for chunk in length_chunks([len(ex.input) for ex in examples]):
                out = score_choices(
                    self.loaded.model, self.loaded.tokenizer, [examples[i] for i in chunk], batch_size=len(chunk),
                    max_length=max_length, adapter_names=None if names is None else [names[i] for i in chunk],
                    handle=None if names is None else self.bank, is_encoder_decoder=self.loaded.is_encoder_decoder,
                    embed=embed,
                )
                self.counts.update(forwards=1)
                for i, s in zip(chunk, out):
                    scored[i] = s
        except Exception as exc:
            if len(parts) == 1:
                parts[0].request.fail(exc)
                return
            for part in parts:
                self._score([part], max_length, rows)
            return
        at = 0
        for part in parts:
            out = []
            temperature, threshold = part.info.temperature, part.info.abstain_threshold
            for ex, s in zip(part.examples, scored[at : at + len(part.examples)]):
                choice = ex.choices[s.pred]
                probs = apply_temperature([s.probs], temperature)[0] if temperature != 1.0 else s.probs
                out.append(Prediction(label_for_choice(part.info, s.pred, choice), choice,
                                      {c: float(p) for c, p in zip(ex.choices, probs)}, list(s.scores),
                                      unsure=abstain(probs, threshold),
                                      embedding=s.embedding if part.request.embed else None))
            at += len(part.examples)
            part.request.deliver(part.start, out)

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.key[0], "revision": self.key[1], "device": self.key[2], "dtype": self.key[3],
            "resident_adapters": len(self.bank), "max_resident_adapters": self.bank.max_slots,
            "adapter_bytes": self.bank.adapter_bytes, "bank_bytes": self.bank.nbytes,
            "merged_copy_bytes": self.merged.nbytes, "merged_installed": self.merged.installed,
            "merges": self.merged.merges, "adapter_loads": self.bank.loads, "evictions": self.bank.evictions,
            **{k: self.counts[k] for k in ("batches", "forwards", "merged_batches", "mixed_batches", "requests", "rows")},
        }
