"""Templates: a data row -> an Example (input text, answer choices, label), rendered in a sandbox.

Torch-free. Modules: ``spec`` (TemplateSpec), ``rendering`` (render, validate, preview), ``column_refs``
(column_expr, column_ref), ``sandbox`` (the Jinja2 sandbox and ``render_text``), ``render_limits``
(per-row CPU and size bounds), ``library`` (built-in templates), ``task_shapes`` (task-shape detection
and the built-ins that fit a file), ``promptsource`` (import of promptsource YAML), ``precheck``
(render a bounded sample before a job is queued), ``truncate`` (fit an input into the model's token
budget by shortening the longest field), ``chat`` (wrap prompts in an instruct model's chat template).
"""

from ia3app.lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "TemplateSpec": "spec",
    "render": "rendering", "render_all": "rendering", "validate": "rendering", "checked_examples": "rendering",
    "preview": "rendering",
    "column_ref": "column_refs", "column_expr": "column_refs",
    "render_text": "sandbox",
    "builtin": "library", "templates_fitting": "task_shapes", "detect_shape": "task_shapes",
    "guess_label_column": "task_shapes",
    "from_promptsource": "promptsource",
    "check_files": "precheck",
    "fit_examples": "truncate",
    "wrap_examples": "chat",
})
