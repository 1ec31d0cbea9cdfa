"""The Jinja2 sandbox every user template renders in.

ImmutableSandboxedEnvironment refuses Python internals (`''.__class__`, `__globals__`, mutating
methods); on top of it this module removes globals and filters a prompt has no use for, and checks
every way we know to build a huge string or spin (repetition, powers, %-widths, str.format, padding
methods, replace, `~` chains, range, a per-row time limit). Undefined names are errors (StrictUndefined),
so a misspelt column never renders as empty text. Any refusal is a UserError ("template refused: ...").
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterable

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ia3app.errors import UserError

MAX_SOURCE_CHARS = 8_000
"""Longest template source accepted."""
MAX_INPUT_CHARS = 20_000
"""Longest rendered input; longer is refused (the model keeps max_length tokens anyway)."""
MAX_CHOICE_CHARS = 2_000
"""Longest rendered answer choice."""
MAX_RANGE = 1_000
"""Largest range() a template may build."""
MAX_RENDER_SECONDS = 2.0
"""Longest a template may spend rendering one row (checked as it produces text)."""


class _Codegen(CodeGenerator):
    """Compiles `a ~ b` to a size-checked join, so chained concatenation cannot build a huge string."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, minus the globals nobody needs, with every way we know to build a huge
    string (repetition, powers, %-widths, padding methods, replace, ~ chains) size-checked."""

    code_generator_class = _Codegen
    intercepted_binops = frozenset({"*", "**", "%"})

    def wrap_str_format(self, value: Any) -> None:
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", "") in (
            "format",
            "format_map",
        ):
            raise SecurityError("str.format is not offered (arbitrary widths); use {{ }} and ~")
        return None

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_INPUT_CHARS:
                    raise SecurityError("repetition too large")
        if operator == "%" and isinstance(left, str):
            specs = re.findall(r"%[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?", left)
            if any(x == "*" or (x and int(x) > MAX_CHOICE_CHARS) for spec in specs for x in spec):
                raise SecurityError("format width too large")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str) and name in _WIDTH_METHODS | {"replace"}:
            _check_growth(__obj.__self__, name, args)
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def checked_concat(parts: Iterable[Any]) -> str:
        text = "".join(str(p) for p in parts)
        if len(text) > MAX_INPUT_CHARS:
            raise SecurityError("concatenation too large")
        return text


def _check_growth(text: str, method: str, args: tuple) -> None:
    if method == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(text) + 1 if old == "" else text.count(old)
        size = len(text) + count * len(new)
    else:
        n = max([a for a in args if isinstance(a, int)] or [8 if method == "expandtabs" else 0])
        size = len(text) * n if method == "expandtabs" else n  # expandtabs: up to n characters per tab
    if size > MAX_INPUT_CHARS:
        raise SecurityError(f"{method}() result too large")


def _replace_filter(s: Any, old: str, new: str, count: int | None = None) -> str:
    _check_growth(str(s), "replace", (old, new))
    return str(s).replace(old, new, -1 if count is None else count)


def _small_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range longer than {MAX_RANGE}")
    return rng


def _environment() -> jinja2.Environment:
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals.clear()  # drop lipsum, cycler, joiner, namespace: callables a prompt has no use for
    env.globals["range"] = _small_range
    for name in ("center", "indent", "wordwrap", "format", "xmlattr", "urlize", "pprint", "attr", "map"):
        env.filters.pop(name, None)  # size-argument and attribute-by-name filters
    env.filters["replace"] = _replace_filter
    return env


ENV = _environment()


def parse(text: str, what: str) -> jinja2.nodes.Template:
    if len(text) > MAX_SOURCE_CHARS:
        raise UserError(f"{what} is {len(text):,} characters long; the limit is {MAX_SOURCE_CHARS:,}")
    try:
        return ENV.parse(text)
    except TemplateSyntaxError as e:
        raise UserError(f"{what} has a syntax error on line {e.lineno}: {e.message}") from None


_COMPILED: dict[str, jinja2.Template] = {}


def compiled(text: str, what: str) -> jinja2.Template:
    if text not in _COMPILED:
        parse(text, what)  # size check and a line-numbered syntax message
        if len(_COMPILED) > 512:
            _COMPILED.clear()
        try:
            _COMPILED[text] = ENV.from_string(text)
        except TemplateSyntaxError as e:  # e.g. a filter the sandbox does not offer
            raise UserError(f"{what} is refused on line {e.lineno}: {e.message}") from None
    return _COMPILED[text]


def render_text(text: str, what: str, context: dict[str, Any], limit: int) -> str:
    template = compiled(text, what)
    parts: list[str] = []
    size = 0
    deadline = time.monotonic() + MAX_RENDER_SECONDS
    try:
        for chunk in template.generate(context):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UserError(f"{what} renders to more than {limit:,} characters; shorten it")
            if time.monotonic() > deadline:
                raise UserError(f"{what} takes more than {MAX_RENDER_SECONDS} s to render one row; simplify it")
    except SecurityError as e:
        raise UserError(f"template refused: {what} tries something a prompt may not do ({e})") from None
    except UndefinedError as e:
        missing = re.fullmatch(r"'(.+)' is undefined", e.message or "")
        if missing:
            raise UserError(f"{what} uses '{missing.group(1)}', which is not a column of this row") from None
        raise UserError(f"{what} could not be rendered: {e.message}") from None
    except RecursionError:
        raise UserError(f"template refused: {what} calls a macro that never stops calling itself") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, jinja2.TemplateError) as e:
        if "no loader" in str(e):  # include / import / extends: there are no other templates to reach
            raise UserError(f"{what} cannot include, import or extend other templates") from None
        raise UserError(f"{what} could not be rendered: {e}") from None
    return "".join(parts).strip()
