"""What the CLI prints besides a command's own lines: the evaluation table (``train``, ``evaluate``), and
no per-load weight bars from transformers in the commands that load a model."""

from __future__ import annotations

import sys

from ia3app.evaluation.report import EvaluationReport, MethodReport


def _ci(r: MethodReport, metric: str) -> str:
    from ia3app.evaluation.uncertainty import intervals_for

    ci = intervals_for(r).get(metric) or {}
    return f"{ci['low']:.3f}-{ci['high']:.3f}" if ci.get("low") is not None else "-"


def print_evaluation(evaluation: EvaluationReport, out=None) -> None:
    from ia3app.evaluation.uncertainty import calibration_text, difference_lines, folds_text, headline

    out = out or sys.stdout
    if headline(evaluation):
        print(headline(evaluation), file=out)
    header = (f"{'method':<14}{'accuracy':>10}{'95% CI':>13}{'macro-F1':>10}{'95% CI':>13}{'ms/pred':>10}"
              f"{'tokens':>9}{'FLOPs/pred':>12}")
    print(header, file=out)
    for method, r in evaluation["methods"].items():
        label = method + (f" ({r['shots']:.3g})" if "shots" in r else "") + ("*" if r.get("meaningful") is False else "")
        print(
            f"{label:<14}{r['accuracy']:>10.3f}{_ci(r, 'accuracy'):>13}{r['macro_f1']:>10.3f}{_ci(r, 'macro_f1'):>13}"
            f"{1000 * r['latency_s']:>10.2f}{r['tokens']:>9.0f}{r['flops']:>12.3g}",
            file=out,
        )
    for line in difference_lines(evaluation, markdown=False):
        print(line, file=out)
    if folds_text(evaluation):
        print(folds_text(evaluation), file=out)
    if "gold" in evaluation:
        print(calibration_text(evaluation.get("calibration")), file=out)
    icl = evaluation["methods"].get("in-context")
    if icl and "shots_per_class" in icl:
        from ia3app.evaluation.in_context import shots_note

        print(("* " if icl.get("meaningful") is False else "in-context: ") + shots_note(icl), file=out)
    ratio = evaluation.get("ratios", {}).get("in-context / t-few")
    if ratio:
        print(f"in-context / t-few: {ratio['latency_s']:.1f}x latency, {ratio['flops']:.1f}x FLOPs", file=out)


def quiet_transformers() -> None:
    """Imported only by the commands that load a model (a CSV is checked without it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own tqdm shows training; no per-load weight bars
