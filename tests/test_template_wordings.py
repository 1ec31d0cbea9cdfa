"""Every task shape is offered at least three built-in wordings (T-Few trains with several prompts per
dataset): they fit the example data, render every row, ask in different words and keep the same answers."""

from pathlib import Path

import pytest

from ia3app.tables import label_counts, load_csv
from ia3app.templates.library import BUILTINS
from ia3app.templates.task_shapes import detect_shape, guess_label_column, templates_fitting
from ia3app.templates.rendering import render_all, validate

ROOT = Path(__file__).parent.parent
CB = ("premise,hypothesis,label\n"
      "The cat sat on the mat all day.,The cat was on the mat.,entailment\n"
      "The cat sat on the mat all day.,The cat is hungry.,neutral\n"
      "The cat sat on the mat all day.,The cat never sat down.,contradiction\n")
WIC = ("word,sentence1,sentence2,label\n"
       "bank,She sat on the river bank.,He deposited cash at the bank.,false\n"
       "run,I run every morning.,She runs five miles a day.,true\n")
MRPC = ("sentence1,sentence2,label\n"
        "The company posted a profit.,The firm made money.,1\n"
        "The company posted a profit.,It rained in Paris.,0\n")
AG = ("text,label\nStocks rose on Monday.,business\nThe team won the cup.,sports\n"
      "A new phone was released.,sci/tech\nLeaders met at the summit.,world\n")


def table_of(source: str):
    if source.endswith(".csv"):
        return load_csv(ROOT / source)
    return load_csv(source.encode())


@pytest.mark.parametrize("source, shape", [
    ("examples/sst2_16shot_seed0.csv", "text"),
    ("tests/data/spam_like.csv", "text"),
    (AG, "text"),
    ("examples/rte_32shot_seed0.csv", "pair"),
    (CB, "pair"),
    (MRPC, "pair"),
    ("tests/data/boolq_like.csv", "passage_question"),
    ("examples/copa_32shot_seed0.csv", "multiple_choice"),
    ("tests/data/winogrande_like.csv", "multiple_choice"),
    ("tests/data/wsc_like.csv", "other"),
    (WIC, "other"),
], ids=["sst2", "spam", "topic", "rte", "cb", "mrpc", "boolq", "copa", "winogrande", "wsc", "wic"])
def test_each_shape_gets_three_wordings_that_render_on_its_data(source, shape):
    table = table_of(source)
    label = guess_label_column(table.columns)
    values = list(label_counts(table, label))
    inputs = [c for c in table.columns if c != label]
    assert detect_shape(inputs, values).kind == shape
    fits = templates_fitting(table.columns, values, label)
    families = {BUILTINS[name].family for name, _ in fits}
    best = BUILTINS[fits[0][0]].family
    same_task = [spec for name, spec in fits if BUILTINS[name].family == best]
    assert len(same_task) >= 3, (best, [name for name, _ in fits])
    assert len({spec.input for spec in same_task}) == len(same_task)  # different wordings ...
    rendered = [render_all(spec, table.rows) for spec in same_task]
    for spec, examples in zip(same_task, rendered):
        assert validate(spec, table.columns, table.rows) == []
        assert all(ex.input.strip() and ex.label is not None for ex in examples)
    for examples in rendered[1:]:  # ... the same answer choices and the same right answer on every row
        assert [(ex.choices, ex.label) for ex in examples] == [(ex.choices, ex.label) for ex in rendered[0]]
    assert families  # the generic wordings may follow (a text), never a template that drops a column
