"""How a template names a data column: ``column_expr`` / ``column_ref`` (a bare name when it is a usable
Jinja name, else ``row["..."]``), the names the renderer provides itself, and which columns a parsed
template reads through ``row``.
"""

from __future__ import annotations

import json

import jinja2.nodes

ROW = "row"
"""The whole row as a mapping, for columns whose names are not Jinja names: {{ row["review text"] }}."""
RESERVED = frozenset({"answer_choices", ROW})
"""Names the renderer provides itself (not columns)."""
_JINJA_WORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False",
                          "None"})


def column_expr(column: str) -> str:
    """A Jinja expression reading `column`: the bare name when it is a usable name, else row["..."]."""
    if column.isidentifier() and column not in _JINJA_WORDS and column not in RESERVED:
        return column
    return f"{ROW}[{json.dumps(column, ensure_ascii=False)}]"


def column_ref(column: str) -> str:
    """`{{ <column_expr> }}`: how a template prints a column."""
    return "{{ " + column_expr(column) + " }}"


def row_columns(ast: jinja2.nodes.Template) -> set[str]:
    """Columns read as row["name"] or row.name."""
    out = set()
    for node in ast.find_all((jinja2.nodes.Getitem, jinja2.nodes.Getattr)):
        if isinstance(node.node, jinja2.nodes.Name) and node.node.name == ROW:
            if isinstance(node, jinja2.nodes.Getattr):
                out.add(node.attr)
            elif isinstance(node.arg, jinja2.nodes.Const) and isinstance(node.arg.value, str):
                out.add(node.arg.value)
    return out
