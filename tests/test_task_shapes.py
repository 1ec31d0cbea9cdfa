"""Task shapes: the template step starts from what the columns are, offers only built-ins that use every
input column, reads per-row option labels (1/2, A/B), and warns about dropped columns and literal answers."""

from pathlib import Path

import pytest

from ia3app.tables import label_counts, load_csv
from ia3app.errors import UserError
from ia3app.templates.library import BUILTINS, index_labels
from ia3app.templates.task_shapes import detect_shape, guess_label_column, templates_fitting
from ia3app.templates.rendering import render_all, validate
from ia3app.templates.spec import TemplateSpec

DATA = Path(__file__).parent / "data"


def fits_for(name: str, inputs=None):
    table = load_csv(DATA / name)
    label = guess_label_column(table.columns)
    return table, label, templates_fitting(table.columns, list(label_counts(table, label)), label, inputs=inputs)


def test_multiple_choice_with_option_columns_and_1_based_labels():
    table, label, fits = fits_for("winogrande_like.csv")
    assert label == "answer" and {BUILTINS[name].family for name, _ in fits} == {"multiple_choice"}  # never sentiment
    spec = fits[0][1]
    assert spec.choice_labels == ["1", "2"] and spec.columns_used() == {"sentence", "option1", "option2"}
    assert validate(spec, table.columns, table.rows) == []
    examples = render_all(spec, table.rows)
    assert [ex.choices[ex.label] for ex in examples[:2]] == ["Sarah", "Kevin"]  # label 1 = option1, 2 = option2
    shape = detect_shape(["sentence", "option1", "option2"], ["1", "2"])
    assert shape.kind == "multiple_choice" and shape.options == ("option1", "option2")
    assert shape.choice_labels == ("1", "2")


@pytest.mark.parametrize("values, n, expected", [
    (["0", "1"], 2, None), (["1", "2"], 2, ["1", "2"]), (["0", "2"], 3, None), (["1", "3"], 3, ["1", "2", "3"]),
    (["A", "C"], 4, ["A", "B", "C", "D"]), (["b", "a"], 2, ["a", "b"]),
])
def test_index_labels(values, n, expected):
    assert index_labels(values, n) == expected


def test_labels_that_index_nothing_are_refused():
    with pytest.raises(UserError, match="do not name one of 2 per-row options"):
        index_labels(["5", "7"], 2)
    assert detect_shape(["sentence", "option1", "option2"], ["yes", "no"]).kind == "other"


def test_lettered_options_render_with_their_letters():
    rows = [{"stem": "2+2?", "answer_a": "3", "answer_b": "4", "label": "B"},
            {"stem": "1+2?", "answer_a": "3", "answer_b": "5", "label": "A"}]
    fits = dict(templates_fitting(["stem", "answer_a", "answer_b", "label"], ["A", "B"]))
    spec = fits["multiple_choice"]
    assert spec.choice_labels == ["A", "B"]
    assert [ex.choices[ex.label] for ex in render_all(spec, rows)] == ["4", "3"]
    with pytest.raises(UserError, match="label 'C' names no answer choice; the choices are labelled A, B"):
        render_all(spec, [rows[0] | {"label": "C"}])
    with pytest.raises(UserError, match="'choice_labels' names 3 choices but there are 2"):
        TemplateSpec("x", "{{a}}", choice_templates=["{{a}}", "{{b}}"], choice_labels=["1", "2", "3"])


def test_passage_question_shape():
    table, label, fits = fits_for("boolq_like.csv")
    assert detect_shape(["passage", "question"], ["True", "False"]).kind == "passage_question"
    assert {BUILTINS[name].family for name, _ in fits} == {"yes_no_question"}
    assert validate(fits[0][1], table.columns, table.rows) == []


def test_coreference_file_gets_a_template_that_uses_the_spans():
    table, label, fits = fits_for("wsc_like.csv")
    assert {BUILTINS[name].family for name, _ in fits} == {"coreference"}
    spec = fits[0][1]
    assert spec.columns_used() == {"text", "span1_text", "span2_text"}
    ex = render_all(spec, table.rows[:1])[0]
    assert '"she" refer to "Maria"' in ex.input and ex.choices[ex.label] == "no"
    # with only the text ticked, the one-text templates come back
    _, _, only_text = fits_for("wsc_like.csv", inputs=["text"])
    assert "text_label" in dict(only_text) and "coreference" not in dict(only_text)


def test_text_that_is_not_a_review_gets_the_generic_template_first():
    _, _, fits = fits_for("spam_like.csv")
    assert list(dict.fromkeys(BUILTINS[name].family for name, _ in fits)) == ["text_label", "sentiment"]
    assert "Which category does this text belong to" in fits[0][1].input
    assert detect_shape(["sentence"], ["1", "2"]).kind == "text"


def test_shared_files_keep_their_builtins(fewshot_dir):
    expected = {"copa": "cause_effect", "rte": "nli2", "sst2": "sentiment"}
    for path in sorted(fewshot_dir.glob("*.csv")):
        table = load_csv(path)
        fits = templates_fitting(table.columns, list(label_counts(table, "label")), "label")
        assert fits[0][0] == expected[path.name.split("_")[0]]


def test_warning_for_a_marked_column_the_template_does_not_use():
    table = load_csv(DATA / "winogrande_like.csv")
    spec = TemplateSpec("mine", "{{ sentence }}", "answer", choice_templates=["{{option1}}", "{{option2}}"],
                        choice_labels=["1", "2"])
    assert validate(spec, table.columns, table.rows, inputs=["sentence", "option1", "option2"]) == []
    spec = TemplateSpec("mine", "{{ sentence }}", "answer", choices=["1", "2"])
    warnings = validate(spec, table.columns, table.rows, inputs=["sentence", "option1", "option2"])
    assert any(w.startswith("columns 'option1', 'option2' are marked as text the model reads, but the template "
                            "does not use it") for w in warnings)


def test_warning_for_per_row_answers_typed_without_braces():
    table = load_csv(DATA / "winogrande_like.csv")
    spec = TemplateSpec("mine", "{{ sentence }}", "answer", choice_templates=["option1", "option2"],
                        choice_labels=["1", "2"])
    warnings = validate(spec, table.columns, table.rows)
    assert any("every row has the same answers ('option1', 'option2')" in w and "did you mean {{ option1 }}?" in w
               for w in warnings)


# ---------------------------------------------------------------- the template page's pieces


def test_template_page_per_row_lines_with_label_values_round_trip():
    from ui import template_page as T

    table, label, fits = fits_for("winogrande_like.csv")
    fields = T.fields_from_spec(fits[0][1])
    assert fields[1] == T.PER_ROW and fields[4].splitlines() == ["1 = {{ option1 }}", "2 = {{ option2 }}"]
    message, html, spec = T.check_template(table.rows, table.columns, label, "mc", *fields,
                                           inputs=["sentence", "option1", "option2"])
    assert message.startswith("✓ The template fits all 16 rows.") and spec.choice_labels == ["1", "2"]
    assert "✓ Sarah" in html
    message, _, spec = T.check_template(table.rows, table.columns, label, "mc", fields[0], T.PER_ROW, "", "",
                                        "1 = {{ option1 }}\n{{ option2 }}")
    assert spec is None and "give every per-row answer line a label value" in message


def test_template_page_warns_of_ticked_columns_left_out_and_literal_answers():
    from ui import template_page as T

    table, label, _ = fits_for("winogrande_like.csv")
    message, _, spec = T.check_template(table.rows, table.columns, label, "mine", "{{ sentence }}", T.PER_ROW, "", "",
                                        "1 = option1\n2 = option2", inputs=["sentence", "option1", "option2"])
    assert spec is not None
    assert "marked as text the model reads, but the template does not use it" in message
    assert "did you mean {{ option1 }}?" in message


def test_template_page_shape_insert_and_new_name():
    from ui import template_page as T

    from ui.shared import DataChoice

    session = DataChoice(dataset_id=1, filename="w.csv", rows=16, columns=["sentence", "option1", "option2", "answer"],
                         label_column="answer", text_columns=["sentence", "option1", "option2"], label_values=["1", "2"])
    assert T.shape_text(session).startswith("**Your data:** multiple choice: each row has its own options")
    assert T.insert_column("Fill the blank:", "option1") == "Fill the blank: {{ option1 }}"
    assert T.insert_column("", "Review Text") == '{{ row["Review Text"] }}'
    assert T.spec_from_fields("", "{{a}}", T.FIXED, "x\ny", "", "", "label").name == T.NEW_NAME


def test_data_page_names_the_shape_of_the_ticked_columns(tmp_path):
    from ui import data_page as U

    table = load_csv(DATA / "winogrande_like.csv")
    assert U.shape_md(table, "answer", ["sentence", "option1", "option2"]).startswith(
        "**The model will read:** multiple choice: each row has its own options (option1, option2); the label "
        "(1, 2) names the right one.")
    assert U.shape_md(table, "answer", ["sentence"]).startswith("**The model will read:** one text (sentence)")
