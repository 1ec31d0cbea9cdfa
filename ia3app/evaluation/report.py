"""The evaluation report's shape: what :func:`ia3app.evaluation.compare.evaluate_methods` returns and
:class:`ia3app.jobtypes.JobResult` keeps as ``evaluation`` (stored as the job's result, written as
results.json, read by the results page, the CLI, the model card and the plots).

TypedDicts, not dataclasses: the report is made once (compare.py, uncertainty.annotate) and then only read,
and its JSON is the stored result's — these types name its keys without changing a byte of it. Keys that
results stored by older versions may lack are marked NotRequired (readers use ``.get`` for them).

Torch-free (ia3app.jobtypes imports it). No ``from __future__ import annotations`` here: Python 3.11 sees
NotRequired only in evaluated annotations.
"""

from typing import Any, NotRequired, TypedDict

METHOD_NAMES = {"zero-shot": "zero-shot", "in-context": "in-context", "t-few": "T-Few"}
"""How pages, plots and sentences name each method of the report."""

ClassScores = TypedDict("ClassScores", {"class": str, "precision": float, "recall": float, "f1": float,
                                        "support": int})
"""One class's row of the per-class table (ia3app.evaluation.metrics.per_class); "class" is a Python keyword."""


class Interval(TypedDict):
    """A percentile-bootstrap interval on one metric (metrics.bootstrap_interval)."""

    value: float | None
    low: float | None
    high: float | None
    level: float
    n: int
    samples: int


class Difference(TypedDict):
    """metric(a) − metric(b) on the same rows, with its paired bootstrap interval and verdict
    (metrics.paired_difference)."""

    metric: str
    a: str
    b: str
    difference: float | None
    low: float | None
    high: float | None
    level: float
    n: int
    samples: int
    verdict: str


class MethodReport(TypedDict):
    """One method's figures on the evaluated rows."""

    n: int
    accuracy: float
    macro_f1: float
    per_class: list[ClassScores]
    confusion_matrix: list[list[int]]
    labels: list[str]
    latency_s: float
    """Seconds per prediction (median of latency_runs timed runs)."""
    latency_runs: NotRequired[int]
    tokens: float
    """Mean tokens one prediction processes."""
    flops: float
    """FLOPs per prediction (ia3app.evaluation.flops.inference_flops)."""
    predictions: list[int]
    """The predicted choice's index per row, in the rows' order."""
    probs: list[list[float]]
    """Each row's probability per choice."""
    intervals: NotRequired[dict[str, Interval]]
    """{"accuracy", "macro_f1"}: bootstrap intervals (results stored before them: uncertainty.intervals_for)."""
    # in-context learning only:
    shots: NotRequired[int]
    min_shots: NotRequired[int]
    input_limit: NotRequired[int]
    shots_per_class: NotRequired[float]
    meaningful: NotRequired[bool]
    """At least one demonstration per class."""


class Calibration(TypedDict):
    """T-Few's temperature fitted on the evaluated rows (calibration.calibration_report)."""

    temperature: float
    source: str
    """What the rows were: "held-out" or "cross-validation"."""
    n: int
    ece_before: float
    ece_after: float
    ece_after_cross_fit: float | None
    reliability_before: dict[str, Any]
    reliability_after: dict[str, Any]
    coverage: list[dict[str, Any]]


class EvaluationReport(TypedDict):
    """Every evaluated method on the same rows, how sure the figures are, and what they cost."""

    methods: dict[str, MethodReport]
    """Per method evaluated (ia3app.jobtypes.EVAL_METHODS), in the order evaluated."""
    labels: list[str]
    num_parameters: int
    encoder_decoder: bool
    ratios: dict[str, dict[str, float | None]]
    """{"in-context / t-few": {"latency_s", "flops", "tokens"}} when both were evaluated."""
    gold: NotRequired[list[int]]
    """The rows' correct choice indices."""
    differences: NotRequired[dict[str, dict[str, Difference]]]
    """{"t-few − in-context" | "t-few − zero-shot": {"accuracy", "macro_f1"}}."""
    calibration: NotRequired[Calibration]
    folds: NotRequired[list[dict[str, Any]]]
    """Cross-validation only: per fold {"fold", "n", <method>: {"accuracy", "macro_f1"}}."""


class Headline(TypedDict):
    """A method's headline numbers (JobResult.metrics, ia3_config.json's "metrics")."""

    accuracy: float
    macro_f1: float
    n: int
