"""The pictures of a finished job (matplotlib, Agg): the results page shows them (gr.Plot) and the
adapter folder keeps them as PNGs beside the model card (plots/*.png).

Each function takes a JobResult (or its evaluation report) and returns a Figure, or None when the
job has nothing to draw (no evaluation, a result stored before the figure's data existed).
No torch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ia3app.evaluation.calibration import at_threshold
from ia3app.evaluation.report import METHOD_NAMES, EvaluationReport
from ia3app.evaluation.uncertainty import intervals_for

COLOURS = {"zero-shot": "#9aa5b1", "in-context": "#e0a03c", "t-few": "#2b6cb0"}
FILES = {"intervals": "accuracy_intervals.png", "confusion": "confusion_matrices.png",
         "reliability": "reliability_diagram.png", "coverage": "coverage_curve.png",
         "folds": "fold_spread.png", "loss": "loss_curve.png"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _name(key: str) -> str:
    return METHOD_NAMES.get(key, key)


def intervals_figure(result) -> Any:
    """Accuracy and macro-F1 per method, each with its 95 % bootstrap interval as an error bar."""
    methods = result.methods
    if not methods:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 2.6), squeeze=False)
    keys = list(methods)
    for ax, (metric, title) in zip(axes[0], (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))):
        for y, key in enumerate(keys):
            ci = intervals_for(methods[key]).get(metric) or {}
            value = methods[key][metric]
            if ci.get("low") is not None:
                ax.errorbar([value], [y], xerr=[[value - ci["low"]], [ci["high"] - value]], fmt="o", capsize=4,
                            color=COLOURS.get(key, "black"))
            else:
                ax.plot([value], [y], "o", color=COLOURS.get(key, "black"))
        ax.set_yticks(range(len(keys)), [_name(k) for k in keys])
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{title} with 95 % interval (n = {methods[keys[0]].get('n', '?')})", fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(result, names: Sequence[str] | None = None) -> Any:
    """One confusion matrix per method, side by side (rows: true label, columns: predicted)."""
    methods = result.methods
    if not methods:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(methods), figsize=(4.0 * len(methods), 3.0), squeeze=False)
    for ax, (key, m) in zip(axes[0], methods.items()):
        matrix = m["confusion_matrix"]
        labels = list(names) if names is not None else [str(lb) for lb in m["labels"]]
        ax.imshow(matrix, cmap="Blues")
        ax.set_title(f"{_name(key)}  (accuracy {m['accuracy']:.0%})")
        ax.set_xticks(range(len(labels)), [str(lb)[:18] for lb in labels], rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), [str(lb)[:18] for lb in labels])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        top = max(max(r) for r in matrix) or 1
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    fig.tight_layout()
    return fig


def reliability_figure(calibration: dict | None) -> Any:
    """Reliability diagram: each confidence bin's accuracy against its mean confidence, before and
    after temperature scaling (the diagonal is perfect calibration)."""
    if not calibration:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    for key, label, colour in (("reliability_before", f"raw (ECE {calibration['ece_before']:.3f})", "#e0a03c"),
                               ("reliability_after", f"T = {calibration['temperature']:.2f} "
                                                     f"(ECE {calibration['ece_after']:.3f})", "#2b6cb0")):
        bins = [b for b in calibration[key]["bins"] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color=colour, label=label)
        for b in bins:
            ax.annotate(str(b["count"]), (b["confidence"], b["accuracy"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points", color=colour)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy in that bin")
    ax.set_title(f"Reliability on {calibration['n']} {calibration['source']} rows", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def coverage_figure(calibration: dict | None, threshold: float | None = None) -> Any:
    """Accuracy of the answered rows against the share answered, as the confidence threshold rises;
    the chosen threshold marked."""
    if not calibration or not calibration.get("coverage"):
        return None
    curve = calibration["coverage"]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.step([p["coverage"] for p in curve], [p["accuracy"] for p in curve], where="post", color="#2b6cb0")
    ax.plot([p["coverage"] for p in curve], [p["accuracy"] for p in curve], ".", color="#2b6cb0", ms=4)
    if threshold:
        point = at_threshold(curve, threshold)
        if point["accuracy"] is not None:
            ax.plot([point["coverage"]], [point["accuracy"]], "o", ms=10, mfc="none", mec="#c53030", mew=2)
            ax.annotate(f"threshold {threshold:.2f}: answers {point['coverage']:.0%} at {point['accuracy']:.0%}",
                        (point["coverage"], point["accuracy"]), xytext=(8, -18), textcoords="offset points",
                        fontsize=8, color="#c53030")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("coverage (share of rows answered)")
    ax.set_ylabel("accuracy of the answered rows")
    ax.set_title("Answer fewer rows, be right more often (T-Few, calibrated)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def folds_figure(evaluation: EvaluationReport | None) -> Any:
    """Each fold's accuracy per method (dots) and their mean (bar): the spread across folds."""
    folds = (evaluation or {}).get("folds")
    if not folds:
        return None
    plt = _plt()
    methods = [m for m in (evaluation.get("methods") or {}) if m in folds[0]]
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for x, key in enumerate(methods):
        values = [f[key]["accuracy"] for f in folds]
        ax.bar([x], [sum(values) / len(values)], color=COLOURS.get(key, "grey"), alpha=0.35, width=0.6)
        ax.plot([x] * len(values), values, "o", color=COLOURS.get(key, "black"))
        for f, v in zip(folds, values):
            ax.annotate(str(f["fold"]), (x, v), xytext=(6, -3), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(methods)), [_name(m) for m in methods])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on the fold's held-out rows")
    ax.set_title(f"{len(folds)}-fold cross-validation: each dot a fold, bar the mean", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def loss_figure(result) -> Any:
    """The training losses over steps: total, and T-Few's three terms (LM, unlikelihood, length-normalised)."""
    curve = getattr(result.training, "loss_curve", None)
    if not curve:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    steps = [row[0] for row in curve]
    for i, (label, style) in enumerate((("total", "-"), ("LM", ":"), ("unlikelihood", "--"), ("length-normalised", "-.")), 1):
        ax.plot(steps, [row[i] for row in curve], style, label=label, lw=1.5 if i == 1 else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training losses", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def figures(result, names: Sequence[str] | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Every figure the job has data for, by FILES key (figures without data are left out)."""
    evaluation = result.evaluation or {}
    calibration = evaluation.get("calibration")
    made = {"intervals": intervals_figure(result), "confusion": confusion_figure(result, names),
            "reliability": reliability_figure(calibration), "coverage": coverage_figure(calibration, threshold),
            "folds": folds_figure(evaluation), "loss": loss_figure(result)}
    return {k: fig for k, fig in made.items() if fig is not None}


def save_all(result, folder: Path, names: Sequence[str] | None = None, threshold: float | None = None) -> list[str]:
    """Write every figure as folder/<FILES[key]> (PNG, 110 dpi); the file names written."""
    plt = _plt()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, fig in figures(result, names, threshold).items():
        fig.savefig(folder / FILES[key], dpi=110)
        plt.close(fig)
        written.append(FILES[key])
    return written
