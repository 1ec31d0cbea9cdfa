"""Cost of the render limits: per-row render time with ia3app's bounded sandbox vs Jinja's plain
ImmutableSandboxedEnvironment (no size checks, no time hook), on the built-in templates.

    python -m bench.bench_render [--rows 2000]

Prints microseconds per row for both and their ratio, and how fast the attack payloads are refused.
"""

from __future__ import annotations

import argparse
import time

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ia3app.errors import UserError
from ia3app.templates.library import builtin
from ia3app.templates.rendering import render, render_context
from ia3app.templates.spec import TemplateSpec

CASES = [  # (builtin template, a row for it)
    ("sentiment", {"sentence": "A warm, funny and clever film about two brothers.", "label": "positive"}),
    ("nli2", {"premise": "A man is sleeping on a bench in the park.", "hypothesis": "A man rests.",
              "label": "yes"}),
    ("multiple_choice", {"question": "Which is a fruit?", "choice1": "apple", "choice2": "chair", "label": "0"}),
    ("cause_effect", {"premise": "The man fell.", "question": "cause", "choice1": "He slipped.", "choice2": "He won.",
              "label": "0"}),
]


def plain_row(env: jinja2.Environment, spec: TemplateSpec, row: dict) -> None:
    context = render_context(spec, row)
    choices = [env.from_string(t).render(context) for t in spec.choice_templates or []] or spec.choices
    env.from_string(spec.input).render(context | {"answer_choices": choices})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.from_string = __import__("functools").lru_cache(None)(env.from_string)  # compiled once, as ours
    print(f"{'template':<16} {'plain µs/row':>13} {'bounded µs/row':>15} {'ratio':>7}")
    for name, row in CASES:
        spec = builtin(name)
        for _ in range(50):
            render(spec, row)
            plain_row(env, spec, row)
        t0 = time.perf_counter()
        for _ in range(args.rows):
            plain_row(env, spec, row)
        t1 = time.perf_counter()
        for _ in range(args.rows):
            render(spec, row)
        t2 = time.perf_counter()
        plain, ours = (t1 - t0) / args.rows * 1e6, (t2 - t1) / args.rows * 1e6
        print(f"{name:<16} {plain:>13.1f} {ours:>15.1f} {ours / plain:>6.2f}×")
    payloads = {
        "freeze (9**100, 26 squarings)": "{% set x = 9 ** 100 %}" + "{% set x = x * x %}" * 26 + "{{ x }}",
        "triple range(1000), no output": "{% for i in range(1000) %}{% for j in range(1000) %}"
                                         "{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
        "join of 1000 × 20,000 chars": "{% set s = 'x' * 20000 %}{{ range(1000)|join(s) }}",
    }
    for label, source in payloads.items():
        t0 = time.perf_counter()
        try:
            render(TemplateSpec(name="p", input=source, choices=["a", "b"]), {})
            outcome = "RENDERED"
        except UserError as e:
            outcome = str(e)[:70]
        print(f"{label:<32} refused in {time.perf_counter() - t0:6.3f} s: {outcome}")


if __name__ == "__main__":
    main()
