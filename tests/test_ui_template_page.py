"""The template page's handlers, called directly: built-ins previewed with the correct choice marked, errors
shown inline, label-map lines, several templates ticked for training."""

from __future__ import annotations

import pytest

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.templates.spec import TemplateSpec
from ui import data_page as U
from ui import template_page as T
from ui import train_page as TR

from ui_calls import SST2_HEAD, ctx, users, write  # noqa: F401  (the app context and two users)


def test_builtin_template_previews_with_the_correct_choice_marked():
    rows = [{"sentence": "great <b>fun</b>", "label": "positive"}, {"sentence": "awful", "label": "negative"}]
    fitting = T.fitting_templates(["sentence", "label"], ["negative", "positive"], "label")
    name = next(iter(fitting))
    fields = T.fields_from_spec(fitting[name])
    message, html, spec = T.check_template(rows, ["sentence", "label"], "label", name, *fields)
    assert message.startswith("✓") and isinstance(spec, TemplateSpec) and spec.name == name
    assert "&lt;b&gt;fun&lt;/b&gt;" in html  # user text is escaped
    assert html.count('class="correct"') == 2


def test_template_errors_are_shown_inline():
    rows = [{"sentence": "x", "label": "positive"}]
    message, html, spec = T.check_template(rows, ["sentence", "label"], "label", "mine", "{{review}} ok?", T.FIXED,
                                           "yes\nno", "", "")
    assert spec is None and "column 'review'" in message and "sentence" in message


def test_label_map_lines_are_parsed():
    spec = T.spec_from_fields("m", "{{s}}", T.FIXED, "bad\ngood", "0 = bad\n1 = good", "", "label")
    assert spec.label_map == {"0": "bad", "1": "good"}
    with pytest.raises(UserError, match="label value = answer"):
        T.spec_from_fields("m", "{{s}}", T.FIXED, "bad\ngood", "0 bad", "", "label")


def test_several_templates_can_be_ticked_for_training(ctx, users, tmp_path):
    state = U.save_upload(ctx, users[0], write(tmp_path, "r.csv", SST2_HEAD), "label", None, U.NONE, None, .25, 0)
    fitting = T.fitting_templates(state.columns, state.label_values, "label")
    primary, *others = list(fitting)
    assert others, "the sst2-shaped file should fit more than one built-in"
    extra = T.train_templates(state, [primary, *others, "no-such-template"], fitting[primary])
    assert [t.name for t in extra] == others  # the primary and unknown names are not doubled in
    config = TR.build_job_config(ctx, users[0], state, fitting[primary], "tiny-demo", "", RecipeConfig(),
                                 False, "", [], extra)
    assert [t.name for t in config.spec.train_templates] == others
    assert config.labels.template == f"{primary} + {len(others)} more for training"
