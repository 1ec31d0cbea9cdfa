"""Templates: rendering, the sandbox, validation messages, preview, promptsource import, built-ins."""

import json

import pytest

import ia3app.templates.sandbox as sandbox
import ia3app.templates.render_limits as render_limits
from ia3app.tables import label_counts, load_csv
from ia3app.errors import UserError
from ia3app.example import Example
from ia3app.templates.library import BUILTINS, builtin
from ia3app.templates.task_shapes import templates_fitting
from ia3app.templates.promptsource import from_promptsource
from ia3app.templates.column_refs import column_ref
from ia3app.templates.rendering import format_preview, preview, render, render_all, validate
from ia3app.templates.spec import TemplateSpec

SENTIMENT = TemplateSpec(
    name="s", input="{{ sentence }}\nIs this review positive or negative?", choices=["negative", "positive"]
)
COPA = TemplateSpec(
    name="copa",
    input="{{ premise }} {% if question == 'cause' %}What was the cause?{% else %}What happened as a result?{% endif %}",
    choice_templates=["{{ choice1 }}", "{{ choice2 }}"],
)
COPA_ROW = {"premise": "The man fell.", "question": "cause", "choice1": "He slipped.", "choice2": "He won.", "label": "0"}


# ---------------------------------------------------------------- rendering


def test_render_fixed_choices_label_values_are_choice_texts():
    ex = render(SENTIMENT, {"sentence": "great fun", "label": "positive"})
    assert ex == Example("great fun\nIs this review positive or negative?", ("negative", "positive"), 1)


def test_render_label_map_case_insensitive_and_unlabelled_rows():
    spec = TemplateSpec(name="m", input="{{ t }}", choices=["no", "yes"], label_map={"0": "no", "1": "yes", "True": "yes"})
    assert render(spec, {"t": "a", "label": "1"}).label == 1
    assert render(spec, {"t": "a", "label": " true "}).label == 1
    assert render(spec, {"t": "a", "label": ""}).label is None
    assert render(spec, {"t": "a"}).label is None


def test_render_per_row_choices_copa():
    ex = render(COPA, COPA_ROW)
    assert ex.input == "The man fell. What was the cause?"
    assert ex.choices == ("He slipped.", "He won.") and ex.label == 0
    assert render(COPA, COPA_ROW | {"question": "effect", "label": "1"}).input.endswith("What happened as a result?")


def test_answer_choices_visible_in_input():
    spec = TemplateSpec(name="t", input="{{ text }} Options: {{ answer_choices | join(', ') }}", choices=["a", "b"])
    assert render(spec, {"text": "x", "label": "b"}).input == "x Options: a, b"
    assert spec.columns_used() == {"text"}


def test_render_errors_name_the_problem():
    with pytest.raises(UserError, match=r"label 'neutral' has no answer choice; the choices are 'negative', 'positive'"):
        render(SENTIMENT, {"sentence": "x", "label": "neutral"})
    with pytest.raises(UserError, match=r"label '2' is not a choice index; per-row choices need 0 to 1"):
        render(COPA, COPA_ROW | {"label": "2"})
    with pytest.raises(UserError, match="renders to empty text"):
        render(SENTIMENT.__class__(name="e", input="{{ sentence }}", choices=["a", "b"]), {"sentence": "  "})
    with pytest.raises(UserError, match=r"row 2: input template uses 'sentence', which is not a column of this row"):
        render_all(SENTIMENT, [{"sentence": "ok", "label": "positive"}, {"text": "no such column"}])


def test_columns_used_from_ast():
    spec = TemplateSpec(name="c", input="{% for w in words.split() %}{{ w }}{% endfor %} {{ title }}",
                        choice_templates=["{{ a }}", "{{ b }}"], label_column="y")
    assert spec.columns_used() == {"words", "title", "a", "b"}


def test_spec_json_roundtrip_and_malformed_specs():
    for spec in (SENTIMENT, COPA, TemplateSpec(name="m", input="{{ t }}", choices=["n", "y"], label_map={"0": "n"})):
        assert TemplateSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(UserError, match="either fixed 'choices' or per-row 'choice_templates'"):
        TemplateSpec(name="x", input="{{ t }}", choices=["a", "b"], choice_templates=["{{ a }}"])
    with pytest.raises(UserError, match="'choices' must be a list of texts; 'label_map' must map label values"):
        TemplateSpec.from_dict({"name": "x", "input": "t", "choices": "ab", "label_map": ["a"]})
    with pytest.raises(UserError, match="unknown template field"):
        TemplateSpec.from_dict({"name": "x", "input": "t", "choices": ["a", "b"], "chioces": []})
    with pytest.raises(UserError, match="template is missing 'input'"):
        TemplateSpec.from_dict({"name": "x", "choices": ["a", "b"]})


# ---------------------------------------------------------------- sandbox

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__dict__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ range.__globals__ }}",
    "{{ text.__class__.__base__.__subclasses__() }}",
    "{{ text.upper.__self__.__class__ }}",
    "{{ (text|list).append(1) }}",
    "{{ {}.update(a=1) }}",
    "{{ text.format(text) }}",
    "{{ '{0.__class__}'.format(text) }}",
    "{{ 'x' * 100000000 }}",
    "{{ 9 ** 9999999 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ text.center(999999999) }}",
    "{{ ('\t' * 5000).expandtabs(100) }}",
    "{{ text.replace('', 'x' * 9000) }}",
    "{% set a = 'xxxxxxxxxx' %}{% set b = a~a~a~a~a~a~a~a~a~a %}{% set c = b~b~b~b~b~b~b~b~b~b %}"
    "{% set d = c~c~c~c~c~c~c~c~c~c %}{% set e = d~d~d~d~d~d~d~d~d~d %}{{ e ~ e }}",
    "{% for i in range(100000) %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ text|sort(attribute='__class__') }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_refuses_internals_and_resource_abuse(source):
    spec = TemplateSpec(name="evil", input=source, choices=["a", "b"])
    with pytest.raises(UserError, match="template refused") as info:
        render(spec, {"text": "hello", "label": "a"})
    assert "<class" not in str(info.value)


@pytest.mark.parametrize("source", ["{{ lipsum(100) }}", "{{ joiner() }}", "{{ namespace() }}", "{{ config }}"])
def test_sandbox_has_no_default_globals(source):
    with pytest.raises(UserError, match="which is not a column of this row"):
        render(TemplateSpec(name="g", input=source, choices=["a", "b"]), {"label": "a"})


@pytest.mark.parametrize("source", ["{% include '/etc/passwd' %}", "{% import 'os' as os %}", "{% extends 'base' %}"])
def test_sandbox_reaches_no_other_templates_or_files(source):
    with pytest.raises(UserError, match="cannot include, import or extend other templates"):
        render(TemplateSpec(name="i", input=source, choices=["a", "b"]), {})


def test_sandbox_refuses_unoffered_filters_and_caps_output(monkeypatch):
    with pytest.raises(UserError, match="No filter named 'attr'"):
        render(TemplateSpec(name="f", input="{{ text|attr('__class__') }}", choices=["a", "b"]), {"text": "x"})
    with pytest.raises(UserError, match="renders to more than 20,000 characters"):
        render(TemplateSpec(name="big", input="{% for i in range(1000) %}{{ text }}{% endfor %}", choices=["a", "b"]),
               {"text": "y" * 50})
    monkeypatch.setattr(render_limits, "MAX_RENDER_SECONDS", 0.01)
    slow = "{% for i in range(1000) %}{% for j in range(300) %}{% endfor %}.{% endfor %}"
    with pytest.raises(UserError, match="takes more than 0.01 s to render one row"):
        render(TemplateSpec(name="slow", input=slow, choices=["a", "b"]), {})


def test_ordinary_jinja_still_works():
    spec = TemplateSpec(name="ok", input="{{ text|upper }} {{ text.replace('l', 'L') }} {{ '%s!' % text }} "
                        "{{ text ~ '?' }} {% for i in range(2) %}{{ i }}{% endfor %} {{ text|length * 2 }}",
                        choices=["a", "b"])
    assert render(spec, {"text": "hello"}).input == "HELLO heLLo hello! hello? 01 10"


# ---------------------------------------------------------------- validation

RTE_COLUMNS = ["premise", "hypothesis", "label"]
RTE_ROWS = [
    {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": "entailment"},
    {"premise": "A dog runs.", "hypothesis": "A cat flies.", "label": "not_entailment"},
    {"premise": "", "hypothesis": "", "label": "entailment"},
]


def test_validate_lists_every_static_problem_in_one_error():
    spec = TemplateSpec(name="nli", input="{{ premise }} {{ hypo }}", choices=["yes", "no", "yes "], label_column="gold")
    with pytest.raises(UserError) as info:
        validate(spec, RTE_COLUMNS, RTE_ROWS)
    message = str(info.value)
    assert "column 'hypo' used by the template is not in the file; the file has: premise, hypothesis, label" in message
    assert "label column 'gold' is not in the file" in message
    assert "answer choices collide: 'yes' appears more than once" in message


def test_validate_unmapped_labels_and_empty_inputs_with_row_numbers():
    spec = TemplateSpec(name="nli", input="{{ premise }} {{ hypothesis }}", choices=["yes", "no"])
    with pytest.raises(UserError) as info:
        validate(spec, RTE_COLUMNS, RTE_ROWS)
    message = str(info.value)
    assert ("label value(s) 'entailment', 'not_entailment' have no answer choice; the choices are 'yes', 'no' "
            "(say which answer each label value means: a line such as “entailment = yes” under “Label value = "
            "answer” on the template page, or label_map in a template file)") in message
    assert "the input renders to empty text in row 3" in message


def test_validate_too_few_choices_syntax_error_and_per_row_collisions():
    with pytest.raises(UserError, match="a template needs at least 2 answer choices; it has 1"):
        validate(TemplateSpec(name="one", input="{{ premise }}", choices=["yes"]), RTE_COLUMNS, RTE_ROWS)
    with pytest.raises(UserError, match="input template has a syntax error on line 2"):
        validate(TemplateSpec(name="bad", input="ok\n{% if %}", choices=["a", "b"]), RTE_COLUMNS, RTE_ROWS)
    rows = [COPA_ROW, COPA_ROW | {"choice2": "He slipped. "}, COPA_ROW | {"choice1": ""}]
    with pytest.raises(UserError) as info:
        validate(COPA, list(COPA_ROW), rows)
    assert "answer choices collide (two identical choices) in row 2" in str(info.value)
    assert "an answer choice renders to empty text in row 3" in str(info.value)


def test_validate_label_map_to_a_non_choice_and_warnings():
    spec = TemplateSpec(name="m", input="{{ premise }}", choices=["yes", "no"], label_map={"entailment": "yes",
                        "not_entailment": "nope"})
    with pytest.raises(UserError, match=r"label_map points to 'nope', which are not choices \('yes', 'no'\)"):
        validate(spec, RTE_COLUMNS, RTE_ROWS[:2])
    three = TemplateSpec(name="m3", input="{{ premise }}", choices=["yes", "maybe", "no"],
                         label_map={"entailment": "yes", "not_entailment": "no"})
    assert validate(three, RTE_COLUMNS, RTE_ROWS[:2]) == [
        "answer choice(s) 'maybe' never appear as a correct answer in this data"
    ]
    assert validate(three, ["premise"], [{"premise": "x"}], require_labels=False) == []


# ---------------------------------------------------------------- preview


def test_preview_marks_the_correct_choice():
    rows = [{"sentence": "fun", "label": "positive"}, {"sentence": "dull", "label": ""}]
    items = preview(SENTIMENT, rows, n=5)
    assert items[0] == {"row": 1, "input": "fun\nIs this review positive or negative?",
                        "choices": ["negative", "positive"], "label": 1, "answer": "positive"}
    assert items[1]["label"] is None and items[1]["answer"] is None
    text = format_preview(items)
    assert "--- row 1" in text and "  * positive" in text and "    negative" in text
    assert "* negative" not in text


# ---------------------------------------------------------------- promptsource

PROMPTSOURCE_FILE = """dataset: super_glue
subset: rte
templates:
  2b52a83c-0021-41fe-b44c-5aaa076d71a2: !Template
    answer_choices: yes ||| no
    id: 2b52a83c-0021-41fe-b44c-5aaa076d71a2
    jinja: '{{premise}} Using only the above description and what you know about the
      world, is "{{hypothesis}}" definitely correct? Yes or no? ||| {% if label != -1
      %}{{ answer_choices[label] }}{% endif %}'
    metadata: !TemplateMetadata
      choices_in_prompt: false
      metrics:
      - Accuracy
      original_task: true
    name: MNLI crowdsource
    reference: Adapted from Williams et al. 2018's instructions to crowdsourcing workers.
  8fb1c6aa-20e9-438c-bece-c6af1c746449: !Template
    answer_choices: Yes ||| No
    id: 8fb1c6aa-20e9-438c-bece-c6af1c746449
    jinja: '{{premise}} Question: Does this imply that "{{hypothesis}}"? Yes or no? |||
      {{answer_choices[label]}}'
    name: does this imply
"""


def test_promptsource_yaml_file_with_label_names():
    spec = from_promptsource(PROMPTSOURCE_FILE, name="does this imply", label_names=["entailment", "not_entailment"])
    assert spec.choices == ["Yes", "No"] and spec.target == "{{answer_choices[label]}}"
    examples = render_all(spec, RTE_ROWS[:2])
    assert examples[0].input == 'A man sleeps. Question: Does this imply that "A man rests."? Yes or no?'
    assert [e.label for e in examples] == [0, 1]
    crowd = from_promptsource(PROMPTSOURCE_FILE, name="MNLI crowdsource", label_names=["entailment", "not_entailment"])
    assert [e.label for e in render_all(crowd, RTE_ROWS[:2])] == [0, 1]
    assert TemplateSpec.from_dict(json.loads(json.dumps(crowd.to_dict()))) == crowd


def test_promptsource_errors():
    with pytest.raises(UserError, match="pick one by name: MNLI crowdsource, does this imply"):
        from_promptsource(PROMPTSOURCE_FILE)
    with pytest.raises(UserError, match="no promptsource template named 'nope'"):
        from_promptsource(PROMPTSOURCE_FILE, name="nope")
    with pytest.raises(UserError, match=r"needs 'jinja' of the form \"input \|\|\| target\""):
        from_promptsource({"jinja": "{{ premise }}", "answer_choices": "a ||| b"})
    with pytest.raises(UserError, match="no 'answer_choices'"):
        from_promptsource({"jinja": "{{ premise }} ||| {{ label }}"})
    with pytest.raises(UserError, match="not valid YAML"):
        from_promptsource("jinja: [unclosed")
    spec = from_promptsource({"jinja": "{{ premise }} ||| {{ answer_choices[label] }}", "answer_choices": "yes ||| no"})
    with pytest.raises(UserError, match="target template could not be rendered"):
        validate(spec, RTE_COLUMNS, RTE_ROWS[:2])  # text labels and no label_names: says so, row by row


def test_promptsource_per_row_choices_with_integer_labels():
    spec = from_promptsource({
        "name": "best_option",
        "jinja": "{{ premise }} What's the best option?\n- {{choice1}}\n- {{choice2}}\n"
                 "We are looking for {% if question == \"cause\" %}a cause{% else %}an effect{% endif %}\n"
                 "||| {% if label != -1 %}{{answer_choices[label]}}{%endif%}",
        "answer_choices": "{{choice1}} ||| {{choice2}}",
    })
    assert spec.choice_templates == ["{{choice1}}", "{{choice2}}"]
    ex = render(spec, COPA_ROW | {"label": "1"})
    assert ex.choices == ("He slipped.", "He won.") and ex.label == 1 and ex.input.endswith("a cause")


# ---------------------------------------------------------------- built-in library


def test_library_has_the_required_builtins_and_each_renders():
    assert len(BUILTINS) >= 8
    rows = {
        "sentiment": {"sentence": "fun", "label": "1"},
        "nli2": {"premise": "p", "hypothesis": "h", "label": "entailment"},
        "nli3": {"premise": "p", "hypothesis": "h", "label": "neutral"},
        "yes_no_question": {"passage": "p", "question": "is it", "label": "True"},
        "paraphrase": {"sentence1": "a", "sentence2": "b", "label": "0"},
        "word_sense": {"word": "bank", "sentence1": "a", "sentence2": "b", "label": "1"},
        "coreference": {"text": "Ann met Bo; she smiled.", "span1_text": "Ann", "span2_text": "she", "label": "True"},
        "cause_effect": COPA_ROW,
        "multiple_choice": {"question": "q", "choice1": "x", "choice2": "y", "label": "1"},
        "topic": {"text": "goal!", "label": "sports"},
        "text_label": {"text": "t", "label": "b"},
    }
    expected = {"sentiment": "positive", "nli2": "yes", "nli3": "maybe", "yes_no_question": "yes",
                "paraphrase": "no", "word_sense": "yes", "coreference": "yes", "cause_effect": "He slipped.", "multiple_choice": "y",
                "topic": "sports", "text_label": "b"}
    for name in BUILTINS:
        values = {"topic": ["sports", "world", "tech"], "text_label": ["a", "b"]}.get(BUILTINS[name].family)
        family = BUILTINS[name].family  # every wording of a task gives the same answer
        ex = render(builtin(name, label_values=values), rows[family])
        assert ex.choices[ex.label] == expected[family], name


def test_builtin_errors():
    with pytest.raises(UserError, match="no built-in template named 'x'; the built-ins are: sentiment"):
        builtin("x")
    with pytest.raises(UserError, match="template 'sentiment' has no column role passage"):
        builtin("sentiment", passage="p")
    with pytest.raises(UserError, match="'good', 'meh', 'bad' do not read as negative / positive"):
        builtin("sentiment", label_values=["good", "meh", "bad"])
    assert builtin("sentiment", text="review").columns_used() == {"review"}


@pytest.mark.parametrize("columns, labels, first", [
    (["question", "passage", "answer"], ["True", "False"], "yes_no_question"),
    (["sentence1", "sentence2", "word", "label"], ["0", "1"], "word_sense"),
    (["premise", "hypothesis", "label"], ["entailment", "neutral", "contradiction"], "nli3"),
    (["question1", "question2", "label"], ["0", "1"], "paraphrase"),
    (["goal", "option1", "option2", "option3", "label"], ["0", "2"], "multiple_choice"),
    (["review", "stars"], ["1", "2", "3", "4", "5"], None),
    (["text", "label"], ["sports", "world", "business"], "topic"),
])
def test_templates_fitting_guesses_columns(columns, labels, first):
    fits = templates_fitting(columns, labels)
    assert (fits[0][0] if fits else None) == first
    for _, spec in fits:
        assert spec.columns_used() <= set(columns)


def test_each_shared_csv_loads_and_renders_with_a_fitting_builtin(fewshot_dir):
    expected = {"copa": "cause_effect", "rte": "nli2", "sst2": "sentiment"}
    for path in sorted(fewshot_dir.glob("*.csv")):
        table = load_csv(path)
        fits = templates_fitting(table.columns, label_counts(table, "label"))
        name, spec = fits[0]
        assert name == expected[path.name.split("_")[0]]
        assert validate(spec, table.columns, table.rows) == []
        examples = render_all(spec, table.rows)
        assert len(examples) == len(table.rows) == 32
        assert all(e.label is not None and e.input for e in examples)
        assert len({e.label for e in examples}) == 2


def test_columns_whose_names_are_not_jinja_names():
    assert column_ref("sentence") == "{{ sentence }}"
    assert column_ref("Review Text") == '{{ row["Review Text"] }}'
    assert column_ref("in") == '{{ row["in"] }}' and column_ref("row") == '{{ row["row"] }}'
    spec = TemplateSpec(name="r", input='{{ row["Review Text"] }} / {{ row.title }} / {{ row["row"] }}',
                        choices=["a", "b"])
    assert spec.columns_used() == {"Review Text", "title", "row"}
    row = {"Review Text": "meh", "title": "T", "row": "R", "label": "b"}
    assert render(spec, row).input == "meh / T / R"
    with pytest.raises(UserError, match="column 'Review Text' used by the template is not in the file"):
        validate(spec, ["title", "row", "label"], [row])
    fits = dict(templates_fitting(["Review Text", "Rating", "Label"], ["neg", "pos"], inputs=["Review Text"]))
    assert templates_fitting(["Review Text", "Rating", "Label"], ["neg", "pos"]) == []  # Rating would be dropped
    assert list(dict.fromkeys(BUILTINS[name].family for name in fits)) == ["sentiment", "text_label"]
    assert fits["sentiment"].label_column == "Label"
    assert render(fits["sentiment"], row | {"Label": "pos"}).input.startswith("meh\n")
    mc = dict(templates_fitting(["goal", "Option A", "Option B", "label"], ["0", "1"]))["multiple_choice"]
    assert mc.choice_templates == ['{{ row["Option A"] }}', '{{ row["Option B"] }}']


def test_validate_unlabelled_data_for_predictions():
    spec = from_promptsource(PROMPTSOURCE_FILE, name="does this imply", label_names=["entailment", "not_entailment"])
    unlabelled = [{k: v for k, v in r.items() if k != "label"} for r in RTE_ROWS[:2]]
    assert validate(spec, ["premise", "hypothesis"], unlabelled, require_labels=False) == []
    odd_labels = [r | {"label": "unknown"} for r in RTE_ROWS[:2]]  # a label column is not checked either
    assert validate(SENTIMENT.__class__(name="n", input="{{ premise }}", choices=["yes", "no"]), RTE_COLUMNS,
                    odd_labels, require_labels=False) == []
    with pytest.raises(UserError, match="label column 'label' is not in the file"):
        validate(spec, ["premise", "hypothesis"], unlabelled)
