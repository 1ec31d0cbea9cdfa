"""How a finished job's result is shown on the results page: the metrics, parameter and speed tables, the
words about how sure the comparison is and what a threshold costs, the class names, the confusion matrices,
and the template's columns in the order the "Try it" boxes follow. Functions of a JobResult only: no
request, no folder (ui.owned_adapter finds those).
"""

from __future__ import annotations

import pandas as pd

from ia3app.evaluation import plots as P
from ia3app.evaluation.in_context import shots_note
from ia3app.evaluation.report import METHOD_NAMES
from ia3app.evaluation.uncertainty import difference_lines, folds_text, headline, intervals_for
from ia3app.jobtypes import JobResult

METRIC_WIDTHS = ["25%", "10%", "15%", "10%", "15%", "11%", "14%"]
"""metrics_frame's columns: sized by their content, a narrow column broke its header inside a word ("accura cy")."""


def _human_bytes(n: float | None) -> str:
    if not n:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _human_count(n: float | None) -> str:
    if n is None:
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def params_md(result: JobResult) -> str:
    p = result.params or {}
    base, added = p.get("base"), p.get("added")
    fraction = p.get("fraction") if p.get("fraction") is not None else (added / base if base and added else None)
    full = p.get("full_model_bytes") or (base * 4 if base else None)
    adapter = p.get("adapter_bytes")
    rows = [
        "| Parameters | |", "|---|---|",
        f"| Base model parameters | **{_human_count(base)}** ({base:,}) |" if base else
        "| Base model parameters | – |",
        f"| (IA)³ parameters trained and added | **{added:,}** |" if added else "| (IA)³ parameters added | – |",
        f"| Fraction of the model | **{fraction:.4%}** |" if fraction else "| Fraction | – |",
        f"| Adapter size on disk | **{_human_bytes(adapter)}** vs the full model's {_human_bytes(full)} (fp32) "
        + (f"(**{full / adapter:,.0f}× smaller**) |" if adapter and full else "|"),
    ]
    return "\n".join(rows)


def metrics_frame(result: JobResult) -> pd.DataFrame:
    methods = result.methods
    rows = []
    for key, m in methods.items():
        rows.append({
            # the count only: the whole note did not fit the column (it is under the header, results_view)
            "method": METHOD_NAMES.get(key, key) + (f" ({m['shots']:g} shots)" if key == "in-context" and shots_note(m)
                                                    else ""),
            "accuracy": f"{m['accuracy']:.1%}",
            "accuracy 95 % CI": _ci_cell(m, "accuracy"),
            "macro-F1": f"{m['macro_f1']:.3f}",
            "macro-F1 95 % CI": _ci_cell(m, "macro_f1", percent=False),
            "ms / prediction": f"{m['latency_s'] * 1000:.1f}",
            "FLOPs / prediction": f"{m['flops']:.2e}",
        })
    return pd.DataFrame(rows)


def _ci_cell(report: dict, metric: str, percent: bool = True) -> str:
    """'62.5 % – 93.8 %' (or '0.612 – 0.901'); a result stored before intervals gets them from its
    confusion matrix; '–' when neither exists."""
    ci = intervals_for(report).get(metric) or {}
    if ci.get("low") is None:
        return "–"
    return f"{ci['low']:.1%} – {ci['high']:.1%}" if percent else f"{ci['low']:.3f} – {ci['high']:.3f}"


def sureness_md(result: JobResult) -> str:
    """How sure the comparison is: paired differences with verdicts, the fold spread, calibration."""
    evaluation = result.evaluation or {}
    if not result.methods:
        return ""
    n = next(iter(result.methods.values())).get("n", result.num_eval)
    lines = [f"**{headline(evaluation)}**", ""] if headline(evaluation) else []
    lines += [f"Intervals are 95 % bootstrap intervals over the {n} rows measured: with this few rows, a few "
             "answers either way move accuracy a lot."]
    diffs = difference_lines(evaluation)
    lines += [f"- {d}" for d in diffs] or ["- (paired differences appear for jobs run since they were added)"]
    if folds_text(evaluation):
        lines += ["", folds_text(evaluation)]  # a paragraph of its own, not part of the last bullet
    return "\n".join(lines)


def coverage_words(result: JobResult, threshold: float | None) -> str:
    """'Threshold 0.70: answers 80 % of rows (32 of 40) at 96 % accuracy; 20 % come back unsure.'"""
    from ia3app.evaluation.calibration import at_threshold, coverage_at_accuracy

    cal = (result.evaluation or {}).get("calibration")
    if not cal:
        return "A confidence threshold needs held-out or cross-validated rows to judge it; this job had none."
    curve, all_rows = cal["coverage"], cal["coverage"][-1]
    if not threshold:
        text = (f"**No threshold: answers every row ({all_rows['answered']}) at {all_rows['accuracy']:.0%} accuracy.** "
                "Move the slider to answer fewer rows more reliably.")
    else:
        point = at_threshold(curve, threshold)
        if point["answered"] == 0:
            text = f"**Threshold {threshold:.2f}: answers none of the {cal['n']} rows** — every prediction would be unsure."
        else:
            text = (f"**Threshold {threshold:.2f}: answers {point['coverage']:.0%} of rows ({point['answered']} of "
                    f"{cal['n']}) at {point['accuracy']:.0%} accuracy**; the other {1 - point['coverage']:.0%} come "
                    "back *unsure*.")
    best = coverage_at_accuracy(curve, 0.95)
    text += (f" To reach 95 % accuracy: threshold {best['threshold']:.2f}, answering {best['coverage']:.0%} of rows."
             if best else " No threshold reaches 95 % accuracy on these rows.")
    return text + f" (Measured on {cal['n']} {cal['source']} rows, calibrated probabilities.)"


def unsure_note(pred: Any, threshold: float | None) -> str:
    """What the Try-it box says under its answer."""
    if pred.unsure:
        best = ", ".join(f"{k} {v:.0%}" for k, v in sorted(pred.probabilities.items(), key=lambda kv: -kv[1]))
        return (f"⚠ **unsure**: the top probability {pred.confidence:.0%} is below this adapter's threshold "
                f"{threshold:.0%}, so no answer is given. Probabilities: {best}.")
    return f"Confidence {pred.confidence:.0%}" + (f" (threshold {threshold:.0%})." if threshold else ".")


def speed_md(result: JobResult) -> str:
    ratios = result.ratio("in-context / t-few")
    if not ratios:
        return "Speed against in-context learning appears when the job evaluated both methods on held-out rows."
    methods = result.methods
    icl = methods["in-context"]
    return (f"**T-Few answers {ratios['latency_s']:.1f}× faster than in-context learning** on this machine "
            + (f"(median of {icl['latency_runs']} timed runs) " if icl.get("latency_runs", 1) > 1 else "")
            + f"({methods['t-few']['latency_s'] * 1000:.1f} ms vs {icl['latency_s'] * 1000:.1f} ms per prediction) and "
            f"needs **{ratios['flops']:.1f}× fewer FLOPs** ({methods['t-few']['flops']:.3g} vs {icl['flops']:.3g}), "
            f"because in-context learning re-reads {icl.get('shots', 'its')} examples with every question.")


def speed_frame(result: JobResult) -> pd.DataFrame:
    methods = result.methods
    return pd.DataFrame([{"method": k, "latency (ms)": m["latency_s"] * 1000} for k, m in methods.items()],
                        columns=["method", "latency (ms)"])


def per_class_frame(result: JobResult, method: str = "t-few") -> pd.DataFrame:
    methods = result.methods
    m = methods.get(method) or next(iter(methods.values()), None)
    if not m:
        return pd.DataFrame()
    rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in m["per_class"]]
    shown = label_display(result, [str(r.get("class", "")) for r in rows])
    return pd.DataFrame([{**r, "class": name} if "class" in r else r for r, name in zip(rows, shown)])


def label_display(result: JobResult, answers: list[str]) -> list[str]:
    """Class names as a person knows them: the label as their data writes it, with the answer word the
    model picks beside it ("1 (good)"); per-row choices in the data's own numbering ("0 (choice 1)")."""
    template = result.template
    if template.choice_templates:
        labels = template.choice_labels or [str(i) for i in range(len(answers))]
        return [f"{labels[i]} ({a})" if i < len(labels) else a for i, a in enumerate(answers)]
    by_answer = {str(v): str(k) for k, v in (template.label_map or {}).items()}
    return [f"{by_answer[a]} ({a})" if a in by_answer and by_answer[a] != a else a for a in answers]


def confusion_figure(result: JobResult):
    """One confusion matrix per method, side by side (rows: true label, columns: predicted), class names
    as the user's data writes them."""
    methods = result.methods
    if not methods:
        return None
    first = next(iter(methods.values()))
    return P.confusion_figure(result, label_display(result, [str(lb) for lb in first["labels"]]))


def column_use(source: str, column: str):
    """Where a template source names a column (a match), or None."""
    import re

    return re.search(rf"(?<![\w.]){re.escape(column)}(?!\w)", source)


def template_columns(result: JobResult) -> list[str]:
    """The template's columns in the order the template reads them (premise before hypothesis), so the
    "Try it" boxes follow the prompt a person wrote, not the alphabet."""
    spec = result.template
    text = "\n".join(spec.sources().values())

    def first_use(column: str) -> tuple[int, str]:
        found = column_use(text, column)
        return (found.start() if found else len(text), column)

    return sorted(spec.columns_used(), key=first_use)
