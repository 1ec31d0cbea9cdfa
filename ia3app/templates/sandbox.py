"""The Jinja2 sandbox every user template renders in, and `render_text`, the one function that renders.

ImmutableSandboxedEnvironment refuses Python internals (`''.__class__`, `__globals__`, mutating
methods); on top of it this module removes globals and filters a prompt has no use for, offers only a
listed set of methods on text, numbers and containers, and bounds CPU and memory (see
ia3app.templates.render_limits): every value a template builds is size-checked (literals, operators, filters,
method calls, captured blocks), integer `*` and `**` are checked before they compute, and a per-row
time limit is enforced on every Python line the render runs, output or not. Undefined names are
errors (StrictUndefined), so a misspelt column never renders as empty text. Every refusal is a
UserError ("template refused: ..." naming the limit).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterable

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

from ia3app.templates import render_limits
from ia3app.errors import UserError
from ia3app.templates.render_limits import (
    MAX_RANGE,
    MAX_VALUE_SIZE,
    RenderTimeout,
    TooLarge,
    check_binop,
    check_size,
    checked_iter,
    measure,
    remember,
    run_bounded,
)

MAX_SOURCE_CHARS = 8_000
"""Longest template source accepted."""
MAX_INPUT_CHARS = 20_000
"""Longest rendered input; longer is refused (the model keeps max_length tokens anyway)."""
MAX_CHOICE_CHARS = 2_000
"""Longest rendered answer choice."""
__all__ = ["ENV", "MAX_CHOICE_CHARS", "MAX_INPUT_CHARS", "MAX_RANGE", "MAX_SOURCE_CHARS", "compiled", "parse",
           "render_text"]


class _Codegen(CodeGenerator):
    """Compiles `a ~ b` to a size-checked join and list/tuple/dict literals to size-checked values, so
    neither chained concatenation nor nesting one literal in another many times builds a huge value."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _checked(self, visit: Any, node: Any, frame: Any) -> None:
        self.write("environment.checked_value(")
        visit(self, node, frame)
        self.write(")")

    def visit_List(self, node: jinja2.nodes.List, frame: Any) -> None:
        self._checked(CodeGenerator.visit_List, node, frame)

    def visit_Dict(self, node: jinja2.nodes.Dict, frame: Any) -> None:
        self._checked(CodeGenerator.visit_Dict, node, frame)

    def visit_Tuple(self, node: jinja2.nodes.Tuple, frame: Any) -> None:
        if node.ctx == "load":
            self._checked(CodeGenerator.visit_Tuple, node, frame)
        else:  # an assignment target: `{% for a, b in ... %}`
            CodeGenerator.visit_Tuple(self, node, frame)


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_STR_METHODS = frozenset(
    "capitalize casefold center count endswith expandtabs find index isalnum isalpha isascii isdecimal isdigit "
    "isidentifier islower isnumeric isprintable isspace istitle isupper join ljust lower lstrip partition "
    "removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip split splitlines startswith "
    "strip swapcase title upper zfill striptags unescape".split()
)
"""Methods offered on text (not format/format_map: arbitrary widths; not translate/encode)."""
_METHODS: dict[type, frozenset[str]] = {
    dict: frozenset({"get", "items", "keys", "values", "copy"}),
    list: frozenset({"count", "index", "copy"}),
    tuple: frozenset({"count", "index"}),
    int: frozenset({"bit_length", "conjugate"}),
    float: frozenset({"is_integer", "conjugate"}),
}
"""Methods offered on other built-in values (not int.to_bytes: a size argument; nothing on bytes)."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, minus the globals nobody needs, with every value it builds size-checked."""

    code_generator_class = _Codegen
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def wrap_str_format(self, value: Any) -> None:
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", "") in (
            "format",
            "format_map",
        ):
            raise SecurityError("str.format is not offered (arbitrary widths); use {{ }} and ~")
        return None

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_INPUT_CHARS:
                    raise SecurityError(f"repetition over {MAX_INPUT_CHARS:,} characters or items")
        if operator == "%" and isinstance(left, str):
            _check_printf(left)
        size = check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return check_size(result, f"a '{operator}' result") if size is None else remember(result, size)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name not in _STR_METHODS:
                raise SecurityError(f"the text method {name}() is not offered")
            if name in _WIDTH_METHODS | {"replace"}:
                _check_growth(owner, name, args)
            if name == "join" and args:
                items = list(args[0])
                _check_join(owner, items)
                args = (items, *args[1:])
        elif owner is not None and not isinstance(owner, type) and type(owner).__module__ == "builtins":
            offered = next((m for t, m in _METHODS.items() if isinstance(owner, t)), frozenset())
            if name not in offered:
                raise SecurityError(f"the {type(owner).__name__} method {name}() is not offered")
        return _checked_result(super().call(__context, __obj, *args, **kwargs), f"the result of {name or 'a call'}()")

    @staticmethod
    def checked_concat(parts: Iterable[Any]) -> str:
        text = "".join(str(check_size(p, "a '~' operand")) for p in parts)
        if len(text) > MAX_INPUT_CHARS:
            raise SecurityError(f"concatenation over {MAX_INPUT_CHARS:,} characters")
        return text

    @staticmethod
    def checked_value(value: Any) -> Any:
        return check_size(value, "a list, tuple or dict")

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Joins a captured block's or a macro's output, refusing it before it is built when too long."""
        parts = list(parts)
        if sum(map(len, parts)) > MAX_VALUE_SIZE:
            raise TooLarge(f"a block or macro output over {MAX_VALUE_SIZE:,} characters (the size limit)")
        return "".join(parts)


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
"""One %-conversion: optional mapping key `(name)`, flags, width, precision (what printf-style reads)."""


def _check_printf(fmt: str) -> None:
    """Refuse a %-format whose widths or precisions could build a big text, before it is built: each
    width/precision at most MAX_CHOICE_CHARS, `*` (taken from the arguments) not offered, and their
    sum within MAX_INPUT_CHARS (the mapping-key form `%(a)3000000000s` is read like any other)."""
    total = 0
    for spec in _PRINTF_SPEC.findall(fmt):
        for x in spec:
            if x == "*":
                raise SecurityError("a %-format width or precision taken from the arguments ('*') is not offered")
            if x:
                if len(x) > 6 or int(x) > MAX_CHOICE_CHARS:
                    raise SecurityError(f"a %-format width or precision over {MAX_CHOICE_CHARS:,} ({x[:12]})")
                total += int(x)
    if total > MAX_INPUT_CHARS:
        raise SecurityError(f"%-format widths and precisions over {MAX_INPUT_CHARS:,} characters in all")


def _checked_result(value: Any, what: str) -> Any:
    if isinstance(value, (str, int, list, tuple, dict, set, frozenset, bytes)):
        return check_size(value, what)
    if hasattr(value, "__next__"):  # a lazy result: each item is checked as it is produced
        return checked_iter(value, f"an item of {what}")
    return value


def _finalize(value: Any) -> Any:
    """Every `{{ }}` value, before it becomes text."""
    return value if isinstance(value, str) else check_size(value, "an output value")


def _check_growth(text: str, method: str, args: tuple) -> None:
    if method == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(text) + 1 if old == "" else text.count(old)
        size = len(text) + count * len(new)
    else:
        n = max([a for a in args if isinstance(a, int)] or [8 if method == "expandtabs" else 0])
        size = len(text) * n if method == "expandtabs" else n  # expandtabs: up to n characters per tab
    if size > MAX_INPUT_CHARS:
        raise SecurityError(f"{method}() result over {MAX_INPUT_CHARS:,} characters")


def _check_join(separator: str, items: list) -> None:
    if measure(items) + len(separator) * len(items) > MAX_VALUE_SIZE:
        raise TooLarge(f"a join over {MAX_VALUE_SIZE:,} characters (the size limit)")


def _replace_filter(s: Any, old: str, new: str, count: int | None = None) -> str:
    _check_growth(str(s), "replace", (old, new))
    return str(s).replace(old, new, -1 if count is None else count)


def _small_range(*args: int) -> range:
    rng = range(*args)
    try:
        n = len(rng)
    except OverflowError:
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        raise SecurityError(f"range longer than {MAX_RANGE:,}")
    return rng


def _precheck_filter(name: str, value: Any, args: tuple, kwargs: dict) -> Any:
    """Arguments that would make a filter build something huge; returns the (maybe listed) value."""
    if name == "join":
        value = value if isinstance(value, (str, list, tuple)) else list(value)
        _check_join(str(args[0] if args else kwargs.get("d", "")), list(value))
    elif name == "batch":
        size = args[0] if args else kwargs.get("linecount", 1)
        fill = args[1] if len(args) > 1 else kwargs.get("fill_with")
        if isinstance(size, int) and size * (1 + measure(fill)) > MAX_VALUE_SIZE:
            raise TooLarge(f"batches over {MAX_VALUE_SIZE:,} items (the size limit)")
    elif name == "slice":
        slices = args[0] if args else kwargs.get("slices", 1)
        if isinstance(slices, int) and slices > MAX_RANGE:
            raise SecurityError(f"more than {MAX_RANGE:,} slices")
    elif name == "tojson":
        indent = args[0] if args else kwargs.get("indent")
        if isinstance(indent, int) and indent > 16:
            raise SecurityError("tojson indent over 16")
    elif name == "sum":
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if not isinstance(start, (int, float)):
            raise SecurityError("sum() of lists is not offered (use ~ or join)")
    return value


def _checked_filter(name: str, fn: Any) -> Any:
    offset = 0 if _PassArg.from_obj(fn) is None else 1

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if len(args) > offset:
            value = _precheck_filter(name, args[offset], args[offset + 1:], kwargs)
            args = (*args[:offset], value, *args[offset + 1:])
        return _checked_result(fn(*args, **kwargs), f"the {name} filter's result")

    return checked


def _environment() -> jinja2.Environment:
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False,
                   finalize=_finalize, optimized=False)  # optimized=False: nothing runs at compile time
    env.globals.clear()  # drop lipsum, cycler, joiner, namespace: callables a prompt has no use for
    env.globals["range"] = _small_range
    for name in ("center", "indent", "wordwrap", "format", "xmlattr", "urlize", "pprint", "attr", "map"):
        env.filters.pop(name, None)  # size-argument and attribute-by-name filters
    env.filters["replace"] = _replace_filter
    env.filters = {name: _checked_filter(name, fn) for name, fn in env.filters.items()}
    return env


ENV = _environment()


MAX_NESTING = 40
"""Deepest nesting of brackets, unary operators and block tags (`if`, `for`, `macro`...) in a template."""
_OPEN = {"(": ")", "[": "]", "{": "}"}
_BLOCKS = frozenset({"if", "for", "macro", "call", "filter", "with", "block", "autoescape", "raw", "trans"})
_UNARY = frozenset({"not", "-", "+"})


def _check_nesting(text: str, what: str) -> None:
    """Refuse, in words and before Jinja's recursive parser or Python's compiler see it, a template
    nested deeper than MAX_NESTING (3,000 parentheses or 150 `if`s would otherwise end in a
    RecursionError or an IndentationError)."""
    depth = blocks = unary = 0
    after_block_begin = False
    for lineno, kind, value in ENV.lex(text):  # the lexer is a loop, not a recursion
        if kind == "whitespace":
            continue
        if kind == "operator" and value in _OPEN:
            depth += 1
        elif kind == "operator" and value in _OPEN.values():
            depth = max(depth - 1, 0)
        elif after_block_begin and kind == "name":
            if value in _BLOCKS:
                blocks += 1
            elif value.startswith("end"):
                blocks = max(blocks - 1, 0)
        unary = unary + 1 if (kind == "operator" and value in _UNARY) or (kind == "name" and value == "not") else 0
        after_block_begin = kind == "block_begin"
        if depth > MAX_NESTING or blocks > MAX_NESTING or unary > MAX_NESTING:
            thing = ("brackets" if depth > MAX_NESTING else "block tags (if, for, macro...)" if blocks > MAX_NESTING
                     else "operators such as not or -")
            raise UserError(f"template refused: {what} nests {thing} more than {MAX_NESTING} deep "
                            f"(line {lineno}); flatten it")


MAX_TREE_DEPTH = 120
"""Deepest syntax tree accepted (a chain of 1,000 filters or `+`s nests that deep, and Jinja's and
Python's own tree walks recurse)."""


def _check_tree_depth(tree: jinja2.nodes.Node, what: str) -> None:
    stack = [(tree, 1)]
    while stack:  # a loop: the walk itself must not recurse
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise UserError(f"template refused: {what} chains too many filters or operators in one expression "
                            f"(line {node.lineno}; nesting over {MAX_TREE_DEPTH}); split it up")
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


def parse(text: str, what: str) -> jinja2.nodes.Template:
    if len(text) > MAX_SOURCE_CHARS:
        raise UserError(f"{what} is {len(text):,} characters long; the limit is {MAX_SOURCE_CHARS:,}")
    try:
        _check_nesting(text, what)
        tree = ENV.parse(text)
        _check_tree_depth(tree, what)
        return tree
    except TemplateSyntaxError as e:
        raise UserError(f"{what} has a syntax error on line {e.lineno}: {e.message}") from None
    except (RecursionError, MemoryError):
        raise UserError(f"template refused: {what} is nested too deeply to read; flatten it") from None


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
        except (SyntaxError, RecursionError, MemoryError) as e:  # Python's own nesting limits, in its compiler
            raise UserError(f"template refused: {what} is nested too deeply to compile ({e}); flatten it") from None
    return _COMPILED[text]


def render_text(text: str, what: str, context: dict[str, Any], limit: int) -> str:
    """The one place a user's template is rendered (preview, validation, training, evaluation,
    predictions, serving): size limits inside the sandbox, the row's time limit on every line.
    Callers rendering several texts for one row share one budget with `render_limits.deadline()`."""
    template = compiled(text, what)

    def run() -> str:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UserError(f"{what} renders to more than {limit:,} characters; shorten it")
        return "".join(parts).strip()

    try:
        return run_bounded(run)
    except RenderTimeout:
        raise UserError(render_limits.timeout_message(what)) from None
    except TooLarge as e:
        raise UserError(f"template refused: {what} builds {e}") from None
    except MemoryError:
        raise UserError(f"template refused: {what} ran out of memory") from None
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
