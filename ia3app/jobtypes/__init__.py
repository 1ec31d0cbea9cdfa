"""The job contract: what a job asks for, what it reports while running, and what it leaves behind.

Every layer speaks these types — the UI builds a :class:`JobRequest`, the queue stores it and hands
it to a worker, the worker runs ``run_job(spec, rows, ...)`` which calls back with
:class:`ProgressEvent` s and returns a :class:`JobResult`; the CLI, the model card and the results
page read that result. JSON text is made and read in exactly one place, :func:`dumps` /
:func:`loads` (the ``to_dict`` / ``from_dict`` of each type give the JSON-able shape). The held-out
split is :meth:`Holdout.split`, with its one seed rule. The estimated time left of a training run
is computed in :meth:`ProgressEvent.train_step` only.

No torch here (nor storage, jobs or ui): the web process imports this package. Modules: ``requests``
(JobSpec, Holdout, DataRef, JobLabels, JobRequest, SuggestRequest), ``progress`` (ProgressEvent),
``results`` (TrainingStats, JobResult, Suggestion, SuggestResult), ``json_text`` (dumps, loads).
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "JobSpec": "requests", "Holdout": "requests", "DataRef": "requests", "JobLabels": "requests",
    "JobRequest": "requests", "SuggestRequest": "requests", "EVAL_METHODS": "requests", "MIN_FOLDS": "requests",
    "MAX_FOLDS": "requests", "JOB_KINDS": "requests", "DEFAULT_SUGGEST_N": "requests", "MAX_SUGGEST_N": "requests",
    "ProgressEvent": "progress", "Progress": "progress", "PHASES": "progress",
    "TrainingStats": "results", "JobResult": "results", "Suggestion": "results", "SuggestResult": "results",
    "LOSS_CURVE_POINTS": "results",
    "dumps": "json_text", "loads": "json_text",
})
