"""Zero-shot vs in-context learning vs T-Few, on the same rows and the same backbone.

Each method is rank classification (scoring.py) through one (IA)^3-injected model:
- zero-shot: the base function (vectors at ones, folded into the weights: exactly the base);
- in-context: the base function on prompts with demonstrations from the training rows (icl.py);
- t-few: the trained vectors merged into the weights (zero extra inference cost).
For each: accuracy, macro-F1, per-class scores and confusion matrix (metrics.py), measured
latency per prediction, tokens and FLOPs per prediction by the paper's counting (cost.py). The
handle is left as it was found: base weights restored, trained vectors loaded.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch

from ia3app.evaluation.flops import inference_flops, prediction_tokens
from ia3app.errors import UserError
from ia3app.example import Example
from ia3app.evaluation.in_context import IclConfig, build_prompts, input_limit
from ia3app.jobtypes import EVAL_METHODS, ProgressEvent
from ia3app.evaluation.metrics import classification_report
from ia3app.evaluation.report import EvaluationReport, MethodReport
from ia3app.evaluation.scoring import score_choices
from ia3app.evaluation.uncertainty import annotate
# timed runs per method (the latency is their median) and the rows each run after the first scores: defined
# beside the time estimate that counts these passes
from ia3app.recipe.step_cost import LATENCY_RUNS, REPEAT_ROWS
from ia3app.templates.chat import overhead_tokens, wrap_examples

METHODS = EVAL_METHODS


def label_names(examples: Sequence[Example]) -> list[str]:
    """Class names: the shared choices when every example has the same ones, else 'choice 1'..."""
    first = examples[0].choices
    if all(ex.choices == first for ex in examples):
        return list(first)
    return [f"choice {i + 1}" for i in range(max(len(ex.choices) for ex in examples))]


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def tokens_per_prediction(tokenizer, examples: Sequence[Example], max_length: int, encoder_decoder: bool) -> float:
    """Mean tokens one rank-classification prediction processes, counted as scoring.py feeds them.

    Encoder-decoder: the input (truncated to max_length) once, plus each choice ending in EOS.
    Decoder-only: input + choice (+ EOS) for every choice (cost.prediction_tokens).
    """
    eos = tokenizer.eos_token_id
    total = 0
    for ex in examples:
        ids = _ids(tokenizer, ex.input, True)
        if not encoder_decoder and len(ids) > 1 and ids[-1] == eos:
            ids = ids[:-1]  # decoder-only scoring continues the input instead of closing it
        choices = [_ids(tokenizer, c if encoder_decoder else " " + c, encoder_decoder) for c in ex.choices]
        n_choices = [len(c) + (0 if c and c[-1] == eos else 1) for c in choices]
        total += prediction_tokens(min(len(ids), max_length), n_choices, encoder_decoder)
    return total / max(len(examples), 1)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()




def _timed_scores(loaded, examples, *, batch_size, max_length, warmup, repeats: int = LATENCY_RUNS,
                  on_batch: Callable[[int], None] | None = None):
    """(scores of every example, seconds per prediction: the median over `repeats` timed runs — the
    first over every example, the others over at most REPEAT_ROWS of them — so one slow run on a busy
    machine does not become the figure). on_batch(rows scored) follows the first run, the one over every row."""
    if warmup:  # first calls pay one-off allocation costs; keep them out of every method's figure
        score_choices(loaded.model, loaded.tokenizer, examples[:batch_size], batch_size=batch_size, max_length=max_length)
    per_prediction = []
    scored = None
    for run in range(max(1, repeats)):
        part = examples if run == 0 else examples[:REPEAT_ROWS]
        _sync(loaded.device)
        start = time.perf_counter()
        out = score_choices(loaded.model, loaded.tokenizer, part, batch_size=batch_size, max_length=max_length,
                            on_batch=on_batch if run == 0 else None)
        _sync(loaded.device)
        per_prediction.append((time.perf_counter() - start) / len(part))
        scored = scored if scored is not None else out
    return scored, statistics.median(per_prediction)


ROWS_SCORED_EVERY_S = 0.5
"""At most one 'rows scored' progress event per this many seconds (and always the last)."""


def _rows_scored(progress, method: str, number: int, methods: int, rows: int) -> Callable[[int], None] | None:
    """The scoring callback that reports evaluation progress: 'rows scored' events (the job page shows them)."""
    if progress is None:
        return None
    last = [0.0]

    def report(done: int) -> None:
        now = time.monotonic()
        if done == rows or now - last[0] >= ROWS_SCORED_EVERY_S:
            last[0] = now
            timing = (f"; timing {LATENCY_RUNS - 1} more runs over {min(rows, REPEAT_ROWS)} rows for the latency"
                      if done == rows and LATENCY_RUNS > 1 else "")
            progress(ProgressEvent("evaluate", f"{method} (method {number} of {methods}): {done} of {rows} rows scored"
                                               + timing))

    return report


def evaluate_methods(
    loaded,
    handle,
    train_examples: Sequence[Example],
    eval_examples: Sequence[Example],
    *,
    methods: Sequence[str] = METHODS,
    batch_size: int = 16,
    max_length: int = 256,
    icl: IclConfig | None = None,
    names: Sequence[str] | None = None,
    warmup: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None,
    source: str = "held-out",
    chat: bool = False,
) -> EvaluationReport:
    """Evaluate each method on `eval_examples` (all labelled); returns a JSON-able dict (its keys named by
    ia3app.evaluation.report.EvaluationReport):

    {"methods": {name: {accuracy, macro_f1, per_class, confusion_matrix, labels, n,
    latency_s, tokens, flops, predictions, probs}}, "ratios": {"in-context / t-few": {...}},
    "labels", "num_parameters", "encoder_decoder"}, plus what uncertainty.annotate adds: "gold"
    (the rows' labels), per method "intervals", "differences" (T-Few − each baseline, paired) and
    "calibration" (T-Few's temperature fitted on these rows; `source` says what they are).
    chat: wrap each prompt in the model's chat template when it has one (TemplateSpec.chat): a
    zero-shot or T-Few input as it is, an in-context prompt whole, demonstrations and query together.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown evaluation method(s) {unknown}; known: {list(METHODS)}")
    if not eval_examples:
        raise ValueError("nothing to evaluate")
    if any(ex.label is None for ex in eval_examples):
        raise ValueError("every evaluation example needs a label")
    names = list(names) if names is not None else label_names(eval_examples)
    num_classes = max(len(names), max(len(ex.choices) for ex in eval_examples))
    enc_dec = loaded.is_encoder_decoder
    trained = handle.vectors()  # (F,) per layer; put back at the end
    handle.restore()
    results: dict[str, MethodReport] = {}
    try:
        for number, method in enumerate(methods, 1):
            if progress:
                progress(ProgressEvent("evaluate", f"evaluating {method} on {len(eval_examples)} rows"))
            scored_rows = _rows_scored(progress, method, number, len(methods), len(eval_examples))
            examples, length, extra = wrap_examples(loaded.tokenizer, eval_examples, chat), max_length, {}
            handle.restore()
            if method == "t-few":
                handle.load_vectors(trained)
            else:
                handle.reset()
            if method == "in-context":
                cfg = icl or IclConfig()
                limit = input_limit(loaded.model.config, loaded.tokenizer, cap=cfg.max_input_tokens)
                wrap = overhead_tokens(loaded.tokenizer, chat)
                prompts = build_prompts(
                    train_examples, eval_examples, loaded.tokenizer, limit=limit - wrap, decoder_only=not enc_dec,
                    config=cfg,
                )
                examples = wrap_examples(loaded.tokenizer, prompts.examples, chat)
                length = max(limit, max(prompts.prompt_tokens) + wrap)  # forced k may exceed the limit: keep it whole
                hard = input_limit(loaded.model.config, loaded.tokenizer, cap=10**9)  # absolute positions only
                if length > hard:
                    raise UserError(
                        f"{cfg.shots} demonstrations make prompts of up to {length} tokens, but this model "
                        f"takes at most {hard}; ask for fewer shots (or leave shots unset: as many as fit)"
                    )
                per_class = prompts.shots / max(num_classes, 1)
                extra = {"shots": prompts.shots, "min_shots": prompts.min_shots, "input_limit": limit,
                         "shots_per_class": round(per_class, 2), "meaningful": per_class >= 1}
            handle.merge()  # ones merge to the base weights exactly; trained vectors to T-Few's
            scored, latency = _timed_scores(loaded, examples, batch_size=batch_size, max_length=length, warmup=warmup,
                                            on_batch=scored_rows)
            preds = [s.pred for s in scored]
            report = classification_report([ex.label for ex in eval_examples], preds, num_classes, names)
            tokens = tokens_per_prediction(loaded.tokenizer, examples, length, enc_dec)
            results[method] = {
                **report,
                **extra,
                "latency_s": latency,
                "latency_runs": LATENCY_RUNS,
                "tokens": tokens,
                "flops": inference_flops(loaded.num_parameters, tokens, enc_dec),
                "predictions": preds,
                "probs": [[float(p) for p in s.probs] for s in scored],
            }
    finally:
        handle.restore()
        handle.load_vectors(trained)
    out: EvaluationReport = {
        "methods": results,
        "labels": names,
        "num_parameters": loaded.num_parameters,
        "encoder_decoder": enc_dec,
        "ratios": {},
    }
    _add_ratios(out)
    return annotate(out, [ex.label for ex in eval_examples], source)


def _add_ratios(out: EvaluationReport) -> None:
    results = out["methods"]
    if "in-context" in results and "t-few" in results:
        icl_r, tfew = results["in-context"], results["t-few"]
        out["ratios"]["in-context / t-few"] = {
            key: icl_r[key] / tfew[key] if tfew[key] else None for key in ("latency_s", "flops", "tokens")
        }


FOLD_KEYS = ("latency_s", "tokens", "flops")


def pool_folds(folds: Sequence[EvaluationReport]) -> EvaluationReport:
    """One report from cross-validation folds' evaluate_methods reports: every row was held out by
    exactly one fold, so the pooled predictions cover each labelled row once, scored by a model that
    never trained on it. Metrics, intervals, paired differences and calibration are computed on the
    pooled rows (source "cross-validation"); latency, tokens and FLOPs are the folds' means;
    "folds" keeps each fold's size and per-method accuracy and macro-F1 (the spread across folds)."""
    if not folds:
        raise ValueError("no folds to pool")
    names = folds[0]["labels"]
    gold = [g for f in folds for g in f["gold"]]
    num_classes = max(len(names), 1 + max(gold, default=0))
    methods: dict[str, MethodReport] = {}
    for method in folds[0]["methods"]:
        parts = [f["methods"][method] for f in folds]
        preds = [p for part in parts for p in part["predictions"]]
        report = classification_report(gold, preds, num_classes, names)
        methods[method] = {
            **report,
            **{key: statistics.fmean(part[key] for part in parts) for key in FOLD_KEYS},
            "latency_runs": parts[0].get("latency_runs"),
            "predictions": preds,
            "probs": [p for part in parts for p in part["probs"]],
        }
        for key in ("shots", "min_shots", "shots_per_class"):
            if key in parts[0]:
                methods[method][key] = min(part[key] for part in parts)
        if "meaningful" in parts[0]:
            methods[method]["meaningful"] = all(part["meaningful"] for part in parts)
    out: EvaluationReport = {
        "methods": methods,
        "labels": names,
        "num_parameters": folds[0]["num_parameters"],
        "encoder_decoder": folds[0]["encoder_decoder"],
        "ratios": {},
        "folds": [
            {"fold": i + 1, "n": len(f["gold"]),
             **{m: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for m, r in f["methods"].items()}}
            for i, f in enumerate(folds)
        ],
    }
    _add_ratios(out)
    return annotate(out, gold, "cross-validation")
