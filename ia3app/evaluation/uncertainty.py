"""How sure the numbers are: intervals, paired differences and calibration on an evaluation report.

:func:`annotate` adds to ``evaluate_methods``' report (in place, returns it), using the held-out
labels (``gold``) and each method's stored predictions and probabilities:

- per method ``intervals``: {"accuracy", "macro_f1"} as metrics.bootstrap_interval entries;
- ``differences``: {"t-few − in-context": {"accuracy": paired_difference, "macro_f1": ...},
  "t-few − zero-shot": ...} on the same rows, each with a plain verdict;
- ``calibration``: calibration.calibration_report on T-Few's probabilities (the rows it did not
  train on: held-out rows, or the out-of-fold rows of cross-validation — ``source`` says which).

Torch-free: the web page also calls :func:`intervals_for` on results stored before this existed
(their confusion matrix is enough for one method's interval; a paired difference needs ``gold``).
"""

from __future__ import annotations

from typing import Sequence

from ia3app.evaluation.calibration import calibration_report
from ia3app.evaluation.metrics import bootstrap_intervals, paired_difference
from ia3app.evaluation.report import METHOD_NAMES, Calibration, Difference, EvaluationReport, Interval, MethodReport

METRICS = ("accuracy", "macro_f1")
PAIRS = (("t-few", "in-context"), ("t-few", "zero-shot"))


def pair_key(a: str, b: str) -> str:
    return f"{a} − {b}"


def annotate(evaluation: EvaluationReport, gold: Sequence[int], source: str = "held-out") -> EvaluationReport:
    """Add intervals, paired differences and T-Few's calibration to an evaluation report (in place)."""
    gold = [int(g) for g in gold]
    methods = evaluation.get("methods") or {}
    k = max(len(evaluation.get("labels") or []), 1 + max(gold, default=0))
    evaluation["gold"] = gold
    for report in methods.values():
        preds = report.get("predictions") or []
        if len(preds) == len(gold):
            report["intervals"] = bootstrap_intervals(gold, preds, k)
    differences = {}
    for a, b in PAIRS:
        if a in methods and b in methods:
            pa, pb = methods[a].get("predictions") or [], methods[b].get("predictions") or []
            if len(pa) == len(gold) == len(pb):
                differences[pair_key(a, b)] = {
                    m: paired_difference(gold, pa, pb, k, metric=m, name_a=METHOD_NAMES[a], name_b=METHOD_NAMES[b])
                    for m in METRICS
                }
    evaluation["differences"] = differences
    tfew = methods.get("t-few") or {}
    probs = tfew.get("probs") or []
    if probs and len(probs) == len(gold) and len({len(p) for p in probs}) == 1:
        evaluation["calibration"] = calibration_report(probs, gold, source)
    return evaluation


def _pairs_from_confusion(matrix: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    labels, preds = [], []
    for y, row in enumerate(matrix):
        for p, count in enumerate(row):
            labels += [y] * int(count)
            preds += [p] * int(count)
    return labels, preds


def intervals_for(report: MethodReport) -> dict[str, Interval]:
    """One method's intervals: stored ones, or recomputed from its confusion matrix (a result stored
    before intervals existed: the bootstrap only needs the multiset of (label, prediction) pairs).
    {} when neither is there."""
    if report.get("intervals"):
        return report["intervals"]
    matrix = report.get("confusion_matrix")
    if not matrix:
        return {}
    labels, preds = _pairs_from_confusion(matrix)
    return bootstrap_intervals(labels, preds, len(matrix)) if labels else {}


def differences_for(evaluation: EvaluationReport | None) -> dict[str, dict[str, Difference]]:
    """The stored paired differences ({} for results stored before they existed)."""
    return (evaluation or {}).get("differences") or {}


# ----- words: one wording for the CLI, the model card and the results page ------------------------
def interval_text(report: MethodReport, metric: str = "accuracy") -> str:
    """'81.2 % (95 % CI 62.5–93.8)' for one method's metric; the bare value when there is no interval."""
    ci = intervals_for(report).get(metric) or {}
    value = report.get(metric)
    if value is None:
        return "—"
    if ci.get("low") is None:
        return f"{100 * value:.1f} %"
    return f"{100 * value:.1f} % ({100 * ci['level']:.0f} % CI {100 * ci['low']:.1f}–{100 * ci['high']:.1f})"


def difference_text(entry: Difference) -> str:
    """'+6.2 points (95 % CI −12.5 to +25.0): no clear difference'."""
    if entry.get("difference") is None:
        return "not measured"
    return (f"{100 * entry['difference']:+.1f} points ({100 * entry['level']:.0f} % CI {100 * entry['low']:+.1f} to "
            f"{100 * entry['high']:+.1f}): **{entry['verdict']}**")


BASELINE_WORDS = {"t-few − in-context": "in-context learning", "t-few − zero-shot": "the base model zero-shot"}


def headline(evaluation: EvaluationReport | None) -> str | None:
    """One plain sentence on whether T-Few beat the baselines on these rows (by the paired accuracy intervals):
    said first, before any table, so an adapter that does not beat them is never mistaken for one that does."""
    diffs = {k: (v.get("accuracy") or {}) for k, v in differences_for(evaluation).items() if k in BASELINE_WORDS}
    diffs = {k: d for k, d in diffs.items() if d.get("low") is not None}
    if not diffs:
        return None
    n = next(iter(diffs.values())).get("n", "?")
    worse = [BASELINE_WORDS[k] for k, d in diffs.items() if d["high"] < 0]
    unclear = [BASELINE_WORDS[k] for k, d in diffs.items() if d["low"] <= 0 <= d["high"]]
    if worse:
        return (f"On these {n} rows T-Few is worse than {' and '.join(worse)}: do not use this adapter as it is "
                "(try more steps, another template or more labelled rows).")
    if unclear:
        return (f"On these {n} rows T-Few does not clearly beat {' or '.join(unclear)}: the difference is within "
                "the noise of so few rows (intervals below).")
    return f"On these {n} rows T-Few beats {' and '.join(BASELINE_WORDS[k] for k in diffs)} (intervals below)."


def difference_lines(evaluation: EvaluationReport | None, markdown: bool = True) -> list[str]:
    """One line per paired comparison stored in the report (accuracy, then macro-F1)."""
    lines = []
    for key, by_metric in differences_for(evaluation).items():
        acc, f1 = by_metric.get("accuracy") or {}, by_metric.get("macro_f1") or {}
        a, b = acc.get("a", key), acc.get("b", "")
        line = (f"{a} − {b}, same {acc.get('n', '?')} rows: accuracy {difference_text(acc)}; "
                f"macro-F1 {difference_text(f1)}")
        lines.append(line if markdown else line.replace("**", ""))
    return lines


def calibration_text(cal: Calibration | None) -> str:
    """How the probabilities were calibrated, with ECE before and after."""
    if not cal:
        return "Probabilities are not calibrated (no held-out or cross-validated rows to fit a temperature on)."
    text = (f"Probabilities are temperature-scaled: T = {cal['temperature']:.2f}, fitted on {cal['n']} "
            f"{cal['source']} rows (never the rows the adapter trained on). Expected calibration error "
            f"{cal['ece_before']:.3f} before, {cal['ece_after']:.3f} after")
    crossed = cal.get("ece_after_cross_fit")
    if crossed is not None:
        text += f" ({crossed:.3f} when T is fitted on half the rows and measured on the other half)"
    return text + "."


def folds_text(evaluation: EvaluationReport | None) -> str:
    """The spread across cross-validation folds ('' when the job did not cross-validate)."""
    folds = (evaluation or {}).get("folds")
    if not folds:
        return ""
    parts = []
    for key in (evaluation.get("methods") or {}):
        values = [f[key]["accuracy"] for f in folds if key in f]
        if values:
            parts.append(f"{METHOD_NAMES.get(key, key)} {min(values):.0%}–{max(values):.0%} "
                         f"(mean {sum(values) / len(values):.0%})")
    sizes = sorted({f["n"] for f in folds})
    return (f"{len(folds)}-fold cross-validation ({'–'.join(str(s) for s in sizes)} rows per fold); "
            f"accuracy across folds: " + "; ".join(parts) + ".")
