"""Evaluation: rank classification, zero-shot vs in-context vs T-Few, metrics and FLOPs.

Modules: ``scoring`` (length-normalised log-probability of every answer choice), ``compare``
(the three methods on the same rows), ``in_context`` (the in-context baseline's prompts),
``metrics`` (accuracy, macro-F1, per-class, confusion), ``flops`` (the paper's cost model),
``report`` (the evaluation report's shape: EvaluationReport, MethodReport, ...; torch-free).
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "score_choices": "scoring", "choice_log_probs": "scoring",
    "evaluate_methods": "compare",
    "classification_report": "metrics",
    "inference_flops": "flops", "training_flops": "flops",
    "EvaluationReport": "report", "MethodReport": "report",
})
