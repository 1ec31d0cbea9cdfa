"""Built-in templates (T0 / promptsource wording), parameterised by column names, each with other
wordings of the same task (T-Few trains with several), and how label values name per-row options.

`builtin("sentiment", text="review")` -> TemplateSpec. Which built-ins fit a file:
ia3app.templates.task_shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

from ia3app.errors import UserError
from ia3app.templates.column_refs import column_expr, column_ref
from ia3app.templates.spec import TemplateSpec

# Label spellings read as the negative / positive side of a binary task (compared case-insensitively).
NEGATIVE = ("0", "false", "no", "negative", "neg", "not_entailment", "not_equivalent", "not_duplicate",
            "not_paraphrase", "different", "bad")
POSITIVE = ("1", "true", "yes", "positive", "pos", "entailment", "equivalent", "duplicate", "paraphrase",
            "same", "good")
NLI3 = {"entailment": "yes", "neutral": "maybe", "contradiction": "no", "0": "yes", "1": "maybe", "2": "no"}


@dataclass(frozen=True)
class Builtin:
    """A built-in template: what it is for, the column roles it needs, and how to build it."""

    name: str
    description: str
    roles: tuple[str, ...]
    """Column roles the factory takes as keyword arguments (besides `label`)."""
    make: Callable[..., TemplateSpec]
    labels: str = "any"
    """'binary', 'nli3', 'index' (per-row choice index), 'multi' (3+ label values become the choices) or 'any'."""
    family: str = ""
    """The task the template words (its first wording's name): other wordings of a family ask the same
    question with the same answer choices, as promptsource's several prompts per dataset do."""

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)


def _binary_map(label_values: Iterable[str] | None, negative: str, positive: str) -> dict[str, str] | None:
    """label value -> choice for a two-way task; None when a value is neither side."""
    values = list(label_values) if label_values is not None else list(NEGATIVE + POSITIVE)
    out = {}
    for v in values:
        key = str(v).strip().casefold()
        if key in NEGATIVE:
            out[str(v).strip()] = negative
        elif key in POSITIVE:
            out[str(v).strip()] = positive
        else:
            return None
    return out


def _label_map(kind: str, label_values: Iterable[str] | None, choices: list[str]) -> dict[str, str]:
    mapping = (
        _binary_map(label_values, choices[0], choices[1]) if kind == "binary"
        else {v: c for v, c in NLI3.items() if label_values is None or v in {str(x).strip() for x in label_values}}
    )
    if kind == "nli3" and label_values is not None:
        unknown = [v for v in label_values if str(v).strip() not in NLI3]
        mapping = None if unknown else mapping
    if not mapping:
        raise UserError(
            f"label values {', '.join(repr(str(v)) for v in label_values or [])} do not read as "
            f"{' / '.join(choices)}; say which answer each label value means (a line such as “value = "
            f"{choices[0]}” under “Label value = answer” on the template page, or label_map in a template file)"
        )
    return mapping


def _values_as_choices(label_values: Iterable[str] | None) -> list[str]:
    if label_values is None:
        raise UserError("this template takes its answer choices from the label values; give label_values")
    return sorted({str(v).strip() for v in label_values if str(v).strip()})


def _fill(source: str, **columns: str) -> str:
    """Put column references into a template text: [[role]] -> {{ column }}, [[role?]] -> the bare expression."""
    for role, column in columns.items():
        source = source.replace(f"[[{role}]]", column_ref(column)).replace(f"[[{role}?]]", column_expr(column))
    return source


def _sentiment(text="sentence", label="label", label_values=None) -> TemplateSpec:
    choices = ["negative", "positive"]
    return TemplateSpec("sentiment", _fill("[[text]]\nIs this review positive or negative?", text=text), label,
                        "Sentiment of a text: negative or positive.", choices, _label_map("binary", label_values, choices))


def _topic(text="text", label="label", label_values=None) -> TemplateSpec:
    return TemplateSpec("topic", _fill("[[text]]\nWhat is this text about? {{ answer_choices | join(', ') }}?", text=text),
                        label, "Topic of a text, one of the label values.", _values_as_choices(label_values))


def _nli2(premise="premise", hypothesis="hypothesis", label="label", label_values=None) -> TemplateSpec:
    return TemplateSpec("nli2", _fill('[[p]]\nQuestion: Does this imply that "[[h]]"? Yes or no?', p=premise, h=hypothesis),
                        label, "Two-way entailment (RTE): does the premise imply the hypothesis? yes / no.",
                        ["yes", "no"], _label_map("binary", label_values, ["no", "yes"]))


def _nli3(premise="premise", hypothesis="hypothesis", label="label", label_values=None) -> TemplateSpec:
    choices = ["yes", "maybe", "no"]
    return TemplateSpec("nli3", _fill('[[p]]\nQuestion: Does this imply that "[[h]]"? Yes, no, or maybe?',
                                      p=premise, h=hypothesis), label,
                        "Three-way entailment (MNLI/CB): entailment / neutral / contradiction -> yes / maybe / no.",
                        choices, _label_map("nli3", label_values, choices))


def _yes_no_question(passage="passage", question="question", label="label", label_values=None) -> TemplateSpec:
    choices = ["no", "yes"]
    return TemplateSpec("yes_no_question", _fill("[[p]]\nQuestion: [[q]]? Yes or no?", p=passage, q=question), label,
                        "A yes/no question about a passage (BoolQ).", choices, _label_map("binary", label_values, choices))


def _paraphrase(sentence1="sentence1", sentence2="sentence2", label="label", label_values=None) -> TemplateSpec:
    choices = ["no", "yes"]
    return TemplateSpec("paraphrase", _fill('Does the sentence\n"[[a]]"\nparaphrase (that is, mean the same thing as) '
                                            'this sentence?\n"[[b]]"\nYes or no?', a=sentence1, b=sentence2), label,
                        "Do two sentences mean the same thing? (MRPC/QQP)", choices,
                        _label_map("binary", label_values, choices))


def _word_sense(word="word", sentence1="sentence1", sentence2="sentence2", label="label",
                label_values=None) -> TemplateSpec:
    choices = ["no", "yes"]
    return TemplateSpec("word_sense", _fill("[[a]]\n[[b]]\nQuestion: Is the word '[[w]]' used in the same sense in the "
                                            "two sentences above? Yes or no?", a=sentence1, b=sentence2, w=word), label,
                        "Is a word used in the same sense in two sentences? (WiC)", choices,
                        _label_map("binary", label_values, choices))


def _coreference(text="text", span1="span1_text", span2="span2_text", label="label", label_values=None) -> TemplateSpec:
    choices = ["no", "yes"]
    return TemplateSpec("coreference", _fill('[[t]]\nIn the passage above, does "[[b]]" refer to "[[a]]"? Yes or no?',
                                             t=text, a=span1, b=span2), label,
                        "Does a pronoun or phrase refer to a given noun? (WSC): yes / no.", choices,
                        _label_map("binary", label_values, choices))


def _cause_effect(premise="premise", question="question", choice1="choice1", choice2="choice2", label="label",
                  label_values=None, choice_labels=None) -> TemplateSpec:
    return TemplateSpec("cause_effect", _fill("[[p]] {% if [[q?]] == 'cause' %}What was the cause?{% else %}"
                                              "What happened as a result?{% endif %}", p=premise, q=question), label,
                        "Pick the cause or the effect of a premise among per-row options (COPA); the label is "
                        "the 0-based index of the right option.",
                        choice_templates=[column_ref(choice1), column_ref(choice2)],
                        choice_labels=_choice_labels(choice_labels, label_values, 2))


def _choice_labels(given, label_values, n: int) -> list[str] | None:
    """Which label value names each per-row option: given, or read off the labels (None: 0-based index)."""
    if given is not None:
        return list(given)
    return None if label_values is None else index_labels(label_values, n)


def _multiple_choice(question="question", options=("choice1", "choice2"), label="label",
                     label_values=None, choice_labels=None) -> TemplateSpec:
    options = [options] if isinstance(options, str) else list(options)
    return TemplateSpec("multiple_choice", _fill("[[q]]\nOptions: {{ answer_choices | join(' / ') }}\nAnswer:", q=question),
                        label, "A question (or a sentence with a blank) with per-row options; the label names the "
                        "right option.", choice_templates=[column_ref(o) for o in options],
                        choice_labels=_choice_labels(choice_labels, label_values, len(options)))


def _text_label(text="text", label="label", label_values=None) -> TemplateSpec:
    return TemplateSpec("text_label", _fill("[[t]]\nWhich category does this text belong to: "
                                            "{{ answer_choices | join(', ') }}?", t=text), label,
                        "Generic classification: a text and one of the label values (any kind of text).",
                        _values_as_choices(label_values))


def _reworded(base: Builtin, name: str, text: str, source: str) -> Builtin:
    """Another wording of `base` (same roles, answer choices and label mapping): `text` names columns by role,
    [[role]] for a column's value, [[role?]] for the bare expression (in Jinja conditions)."""
    import inspect

    defaults = {p.name: p.default for p in inspect.signature(base.make).parameters.values()
                if p.name in base.roles}

    def make(label_values=None, **columns) -> TemplateSpec:
        spec = base.make(label_values=label_values, **columns)
        return replace(spec, name=name, input=_fill(text, **{role: column for role, column in {**defaults, **columns}.items()
                                                                     if isinstance(column, str)}),
                                   description=f"{spec.description} Another wording ({source}).")

    return Builtin(name, f"{base.description} Another wording ({source}).", base.roles, make, base.labels,
                   base.family)


def _with_wordings(base: Builtin, *wordings: tuple[str, str, str]) -> list[Builtin]:
    """base and its other wordings, (name, text, where the wording comes from) each."""
    return [base, *(_reworded(base, *w) for w in wordings)]


ALL_OPTIONS = "{{ answer_choices | join(' or ') }}"
BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("sentiment", "Sentiment of a text: negative or positive.", ("text",), _sentiment, "binary"),
    Builtin("nli2", "Entailment, 2-way (RTE): yes / no.", ("premise", "hypothesis"), _nli2, "binary"),
    Builtin("nli3", "Entailment, 3-way (MNLI/CB): yes / maybe / no.", ("premise", "hypothesis"), _nli3, "nli3"),
    Builtin("yes_no_question", "Yes/no question over a passage (BoolQ).", ("passage", "question"),
            _yes_no_question, "binary"),
    Builtin("paraphrase", "Same meaning? (MRPC/QQP): yes / no.", ("sentence1", "sentence2"), _paraphrase, "binary"),
    Builtin("word_sense", "Same word sense in two sentences? (WiC): yes / no.", ("word", "sentence1", "sentence2"),
            _word_sense, "binary"),
    Builtin("coreference", "Does a phrase refer to a noun? (WSC): yes / no.", ("text", "span1", "span2"),
            _coreference, "binary"),
    Builtin("cause_effect", "Cause or effect among per-row options (COPA).",
            ("premise", "question", "choice1", "choice2"), _cause_effect, "index"),
    Builtin("multiple_choice", "Question or sentence with per-row options.", ("question", "options"),
            _multiple_choice, "index"),
    Builtin("topic", "Topic of a text, from the label values.", ("text",), _topic, "multi"),
    Builtin("text_label", "Generic classification: any text → one of the label values.", ("text",), _text_label),
]}
# Every task shape gets at least three wordings (T-Few trains with all of a dataset's prompts; the template
# page offers the others under "Also train with these templates"). Wordings after promptsource's prompts.
_MORE_WORDINGS: dict[str, list[tuple[str, str, str]]] = {
    "sentiment": [
        ("sentiment_said", "[[text]]\nQuestion: Was that sentence negative or positive? Answer:", "SST-2 'said'"),
        ("sentiment_following", "Does the following sentence have a negative or positive sentiment?\n[[text]]",
         "SST-2 'following positive negative'"),
    ],
    "topic": [
        ("topic_pick", "Pick one category for the following text. The options are: "
                       "{{ answer_choices | join(', ') }}.\n[[text]]", "AG News 'classify with choices'"),
        ("topic_after", "[[text]]\nWhich topic is this text about? " + ALL_OPTIONS + "?", "AG News 'which section'"),
    ],
    "nli2": [
        ("nli2_guaranteed", 'Given that [[premise]] Is it guaranteed true that "[[hypothesis]]"? Yes or no?',
         "RTE 'guaranteed true'"),
        ("nli2_justified", '[[premise]] Are we justified in saying that "[[hypothesis]]"? Yes or no?',
         "RTE 'justified in saying'"),
        ("nli2_based_on", '[[premise]]\nBased on the previous passage, is it true that "[[hypothesis]]"? Yes or no?',
         "RTE 'based on the previous passage'"),
    ],
    "nli3": [
        ("nli3_guaranteed", 'Given that [[premise]] Is it guaranteed true that "[[hypothesis]]"? Yes, no, or maybe?',
         "CB 'guaranteed true'"),
        ("nli3_justified", '[[premise]] Are we justified in saying that "[[hypothesis]]"? Yes, no, or maybe?',
         "CB 'justified in saying'"),
        ("nli3_based_on", '[[premise]]\nBased on the previous passage, is it true that "[[hypothesis]]"? '
                          "Yes, no, or maybe?", "CB 'based on the previous passage'"),
    ],
    "yes_no_question": [
        ("yes_no_after_reading", "Passage: [[passage]]\n\nAfter reading this passage, I have a question: "
                                 "[[question]]? Yes or no?", "BoolQ 'after reading'"),
        ("yes_no_based_on", "[[passage]]\nBased on the previous passage, [[question]]? Yes or no?",
         "BoolQ 'based on the previous passage'"),
    ],
    "paraphrase": [
        ("paraphrase_same_thing", 'Sentence 1: "[[sentence1]]"\nSentence 2: "[[sentence2]]"\nDo these two '
                                  "sentences express the same thing? Yes or no?", "MRPC 'same thing'"),
        ("paraphrase_want_to_know", "I want to know whether the following two sentences mean the same thing.\n"
                                    "[[sentence1]]\n[[sentence2]]\nDo they? Yes or no?", "MRPC 'want to know'"),
    ],
    "word_sense": [
        ("word_sense_same_meaning", 'Does the word "[[word]]" have the same meaning in these two sentences? '
                                    "Yes or no?\n[[sentence1]]\n[[sentence2]]", "WiC 'same sense'"),
        ("word_sense_a_b", 'Sentence A: [[sentence1]]\nSentence B: [[sentence2]]\n\nIs "[[word]]" used with a '
                           "similar meaning in sentences A and B? Yes or no?", "WiC 'similar sense'"),
    ],
    "coreference": [
        ("coreference_replaced", '[[text]]\nIn the previous sentence, can the pronoun "[[span2]]" be replaced '
                                 'with "[[span1]]"? Yes or no?', "WSC 'replaced with'"),
        ("coreference_they_mean", '[[text]]\nHere, by "[[span2]]" they mean "[[span1]]". Yes or no?',
         "WSC 'by p they mean'"),
    ],
    "cause_effect": [
        ("cause_effect_best_option", "[[premise]]\n\nWhat's the best option?\n- "
                                     "{{ answer_choices | join('\\n- ') }}\n\nWe are looking for "
                                     "{% if [[question?]] == 'cause' %}a cause{% else %}an effect{% endif %}",
         "COPA 'best option'"),
        ("cause_effect_more_likely", "Pick the more likely continuation to the following sentence:\n[[premise]] "
                                     "{% if [[question?]] == 'cause' %}as a result of:{% else %}as a consequence:"
                                     "{% endif %}", "COPA 'more likely'"),
    ],
    "multiple_choice": [
        ("multiple_choice_fill", "[[question]]\nWhich option fits best: " + ALL_OPTIONS + "?",
         "WinoGrande 'fill in the blank'"),
        ("multiple_choice_pick", "Pick the right option.\n[[question]]\n- {{ answer_choices | join('\\n- ') }}",
         "WinoGrande 'Replace'"),
    ],
    "text_label": [
        ("text_label_pick", "Pick one category for the following text. The options are: "
                            "{{ answer_choices | join(', ') }}.\n[[text]]", "generic, after AG News"),
        ("text_label_after", "[[text]]\nGiven these categories: {{ answer_choices | join(', ') }}, which one does "
                             "the text belong to?", "generic"),
    ],
}
BUILTINS = {b.name: b for base in list(BUILTINS.values())
            for b in _with_wordings(base, *_MORE_WORDINGS.get(base.name, []))}


def builtin(name: str, label_values: Iterable[str] | None = None, **columns: Any) -> TemplateSpec:
    """Build built-in `name` for these column names (roles not given keep their default column names)."""
    if name not in BUILTINS:
        raise UserError(f"no built-in template named '{name}'; the built-ins are: {', '.join(BUILTINS)}")
    entry = BUILTINS[name]
    unknown = sorted(set(columns) - set(entry.roles) - {"label"})
    if unknown:
        raise UserError(f"template '{name}' has no column role {', '.join(unknown)}; its roles are: "
                        f"{', '.join(entry.roles + ('label',))}")
    return replace(entry.make(label_values=label_values, **columns), chat=True)


def index_labels(label_values: Iterable[str], n: int) -> list[str] | None:
    """How label values name n per-row options: None for 0-based indexes (0..n-1), else the value naming each
    option in order (["1", "2"] for 1-based, ["A", "B"] for letters). UserError when they index nothing."""
    values = {str(v).strip() for v in label_values if str(v).strip()}
    if values and all(re.fullmatch(r"[0-9]+", v) for v in values):
        numbers = {int(v) for v in values}
        if 0 in numbers and max(numbers) < n:
            return None
        if 0 not in numbers and max(numbers) <= n:
            return [str(i) for i in range(1, n + 1)]
    letters = "abcdefghij"[:n]
    if values and all(v.casefold() in letters and len(v) == 1 for v in values):
        upper = any(v.isupper() for v in values)
        return [c.upper() if upper else c for c in letters]
    shown = ", ".join(repr(v) for v in sorted(values)[:8])
    raise UserError(f"label values {shown} do not name one of {n} per-row options; use 0 to {n - 1}, 1 to {n} "
                    f"or letters A to {letters[-1].upper()}")
