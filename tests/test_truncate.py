"""Long inputs keep the template's words and the shorter fields; the longest field is cut; rows are named."""

import pytest

from ia3app.templates.library import builtin
from ia3app.templates.rendering import render_all
from ia3app.templates.spec import TemplateSpec
from ia3app.templates.truncate import fit_examples, shortenable_columns, warning


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir("t0"))


def count(tokenizer, text):
    return len(tokenizer(text)["input_ids"])


def test_the_question_survives_a_long_passage(tokenizer):
    spec = builtin("yes_no_question", label_values=["True", "False"])
    rows = [{"passage": "The river is long. " * 200, "question": "is the river long", "label": "True"},
            {"passage": "Short passage.", "question": "is it short", "label": "False"}]
    examples = render_all(spec, rows)
    assert count(tokenizer, examples[0].input) > 256
    fitted = fit_examples(spec, rows, examples, tokenizer, 256)
    first = fitted.examples[0]
    assert count(tokenizer, first.input) <= 256
    assert first.input.endswith("Question: is the river long? Yes or no?") and "…" in first.input
    assert first.label == examples[0].label and first.choices == examples[0].choices
    assert fitted.examples[1] == examples[1]  # a row that fits is untouched
    assert fitted.rows_cut == [1] and fitted.columns_cut == ["passage"] and fitted.still_long == []
    text = warning(fitted, 256)
    assert text.startswith("1 training row is longer than the model reads at once (about 256 word pieces): in "
                           "row 1 the end of the longest text ('passage') was left out")
    assert "max_length" not in text
    assert warning(fit_examples(spec, rows[1:], examples[1:], tokenizer, 256), 256) is None


def test_the_longest_field_is_cut_first_and_answers_never(tokenizer):
    spec = TemplateSpec("mc", "{{ a }} | {{ b }} | pick one", "label", choice_templates=["{{ c1 }}", "{{ c2 }}"])
    assert shortenable_columns(spec) == ["a", "b"]
    rows = [{"a": "alpha " * 150, "b": "beta " * 10, "c1": "one " * 10, "c2": "two", "label": "0"}]
    fitted = fit_examples(spec, rows, render_all(spec, rows), tokenizer, 128)
    ex = fitted.examples[0]
    assert count(tokenizer, ex.input) <= 128 and fitted.columns_cut == ["a"]
    assert ex.input.count("beta") == 10 and ex.input.endswith("| pick one")
    assert ex.choices == ("one " * 9 + "one", "two")  # choices are rendered (trimmed), never shortened


def test_template_words_alone_too_long_are_reported(tokenizer):
    spec = TemplateSpec("w", "{{ t }} " + "word " * 300, "label", choices=["x", "y"])
    rows = [{"t": "hi", "label": "x"}]
    fitted = fit_examples(spec, rows, render_all(spec, rows), tokenizer, 64)
    assert fitted.still_long == [1]
    assert "template's own words are already too long" in warning(fitted, 64)
