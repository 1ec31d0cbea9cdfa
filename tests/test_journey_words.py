"""Issue 23 item 9: the words a new user met, each said as the page shows things (no name the page never
shows, no "file" where there is none, no "rows 1" for a typed box), and data that cannot work refused."""

from __future__ import annotations

import gzip

import pytest

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.tables import load_csv
from ia3app.templates.library import builtin
from ia3app.templates.rendering import validate
from ia3app.templates.spec import TemplateSpec
from ui import data_page as U
from ui import owned_adapter as O
from ui import template_page as T
from ui import train_page as TR

from ui_calls import SST2_HEAD, ctx, users, write  # noqa: F401  (the same app context and two users)


def test_unmapped_labels_are_explained_with_the_box_the_page_shows():
    spec = TemplateSpec(name="t", input="{{ text }} Good?", choices=["bad", "good"])
    rows = [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}]
    with pytest.raises(UserError) as info:
        validate(spec, ["text", "label"], rows)
    message = str(info.value)
    assert "“Label value = answer” on the template page" in message and "“neg = bad”" in message
    assert "add them to label_map" not in message


def test_a_prediction_request_names_the_rows_sent_not_a_file():
    spec = TemplateSpec(name="t", input="{{ sentence }} Good?", choices=["bad", "good"])
    with pytest.raises(UserError) as info:
        validate(spec, ["review"], [{"review": "x"}], require_labels=False, source="rows sent")
    assert str(info.value).endswith("column 'sentence' used by the template is not in the rows sent; the rows sent "
                                    "have: review")


def test_an_empty_option_in_try_it_names_the_box_not_rows_1():
    copa = TemplateSpec.from_dict({"name": "copa", "input": "{{ premise }} What was the {{ question }}?",
                                   "choice_templates": ["{{ choice1 }}", "{{ choice2 }}"], "choice_labels": ["0", "1"],
                                   "label_column": "label"})
    typed = {"premise": "It rained.", "question": "effect", "choice1": "wet", "choice2": "  "}
    with pytest.raises(UserError, match="^type something in choice2 too: it holds an answer for the model to choose"):
        O.check_options_typed(copa, typed)
    O.check_options_typed(copa, {**typed, "choice2": "dry"})
    with pytest.raises(UserError, match="renders to empty text in row 1$"):  # the API's words: one row, "row"
        validate(copa, list(typed), [typed], require_labels=False)


def test_no_comparison_ticked_is_refused_instead_of_holding_rows_out_for_nothing(ctx, users, tmp_path):
    state = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.AUTO, None, 0.25, 0)
    spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").values()))
    with pytest.raises(UserError, match="tick at least one method under “Compare on the held-out rows”"):
        TR.build_job_config(ctx, users[0], state, spec, "tiny-demo", "", RecipeConfig(), False, "", [])
    none = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.NONE, None, 0.25, 0)
    assert TR.build_job_config(ctx, users[0], none, spec, "tiny-demo", "", RecipeConfig(), False, "", [])


def test_a_first_line_of_spaces_is_named_not_taken_as_missing_rows():
    with pytest.raises(UserError, match="^the first line holds only spaces where the column names belong"):
        load_csv(b"   \ngreat,positive\n")


@pytest.mark.parametrize("packed, kind", [(gzip.compress(b"text,label\nx,a\n", mtime=0), "gzip"),
                                          (b"BZh91AY&SY" + b"\x00" * 20, "bzip2")], ids=["gzip", "bzip2"])
def test_a_compressed_file_is_called_compressed(packed, kind):
    with pytest.raises(UserError, match=f"^this is a {kind}-compressed file, not CSV text; decompress it first"):
        load_csv(packed)


def test_a_ticked_text_column_of_only_spaces_cannot_be_saved(ctx, users, tmp_path):
    path = write(tmp_path, "r.csv", "text,note,label\n" + "".join(f"t{i},  ,{'ab'[i % 2]}\n" for i in range(8)))
    table = U.parse(path, ctx)
    with pytest.raises(UserError, match="column 'note' is empty \\(or only spaces\\) in every row"):
        U.label_report(table, "label", ["text", "note"])
    with pytest.raises(UserError, match="untick it as text the model reads, or fill it in"):
        U.save_upload(ctx, users[0], path, "label", None, U.AUTO, None, 0.25, 0, text_columns=["text", "note"])
    assert U.save_upload(ctx, users[0], path, "label", None, U.AUTO, None, 0.25, 0, text_columns=["text"])


def test_a_tiny_file_says_the_same_held_out_count_on_every_page(ctx, users, tmp_path):
    path = write(tmp_path, "two.csv", "text,label\ngood film,pos\nbad film,neg\n")
    state = U.save_upload(ctx, users[0], path, "label", None, U.AUTO, None, 0.25, 0)
    summary = U.split_summary(U.parse(path, ctx).rows, "label", 0.25, 0)
    assert "0 held out" in summary and state.held_out == 0
    assert T.held_out_words(state).startswith("0 held out: too few rows per label for the 25% share")
    big = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.AUTO, None, 0.25, 0)
    assert T.held_out_words(big) == f"{big.held_out} held out (25% share)" and big.held_out > 0


def test_builtin_label_words_name_the_page_box():
    with pytest.raises(UserError, match="“Label value = answer” on the template page"):
        builtin("sentiment", label_values=["zebra", "yak"], text="text", label="label")
