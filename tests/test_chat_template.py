"""TemplateSpec.chat: prompts wrapped in an instruct model's chat template, the same way in training,
zero-shot, in-context learning and serving; models without a chat template are left as they were."""

from __future__ import annotations

import csv
import json

import pytest

from ia3app.backbones.loading import load_model
from ia3app.backbones.tiny import TINY_CHAT_TEMPLATE
from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.evaluation.scoring import score_choices
from ia3app.example import Example
from ia3app.jobtypes import JobSpec
from ia3app.templates.chat import applies, overhead_tokens, wrap_examples, wrap_text
from ia3app.templates.library import builtin
from ia3app.templates.spec import TemplateSpec


@pytest.fixture
def rows(fewshot_dir):
    with open(fewshot_dir / "sst2_16shot_seed0.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_wrap_is_the_tokenizers_chat_template_up_to_the_assistants_turn(tiny_model_dir):
    chat = load_model(str(tiny_model_dir("llama", chat=True)), device="cpu").tokenizer
    plain = load_model(str(tiny_model_dir("llama")), device="cpu").tokenizer
    assert wrap_text(chat, "a good film") == "<user>a good film</user>\n<assistant>"
    examples = [Example("a good film", ("bad", "good"), 1)]
    assert wrap_examples(chat, examples, True) == [Example("<user>a good film</user>\n<assistant>", ("bad", "good"), 1)]
    assert wrap_examples(chat, examples, False) == examples  # the template's setting off
    assert wrap_examples(plain, examples, True) == examples  # a model without a chat template: as before
    assert applies(chat, True) and not applies(plain, True) and not applies(chat, False)
    assert overhead_tokens(chat, True) == len("<user></user>\n<assistant>") and overhead_tokens(plain, True) == 0


def test_builtins_turn_it_on_custom_templates_and_stored_ones_keep_it_off():
    assert builtin("sentiment").chat is True
    spec = TemplateSpec("mine", "{{text}}", choices=["a", "b"])
    assert spec.chat is False and "chat" not in spec.to_dict()  # templates stored before the setting read the same
    assert TemplateSpec.from_dict(builtin("sentiment").to_dict()).chat is True
    with pytest.raises(UserError, match="'chat' must be true or false"):
        TemplateSpec("mine", "{{text}}", choices=["a", "b"], chat="yes")


def test_training_evaluation_and_serving_read_the_same_wrapped_inputs(tiny_model_dir, rows, tmp_path):
    """One job on a model with a chat template: T-Few's held-out scores equal scoring the wrapped inputs
    by hand, in-context prompts are one user turn holding demonstrations and query, and the serving
    engine answers the held-out rows with the same scores as the evaluation."""
    from ia3app.adapters.files import apply_adapter
    from ia3app.adapters.ia3 import inject
    from ia3app.recipe.run_job import run_job
    from ia3app.serving.engine import ServingEngine
    from ia3app.templates.rendering import render_all
    from ia3app.templates.truncate import fit_examples

    model_dir = tiny_model_dir("llama", chat=True)
    template = builtin("sentiment", label_values=["negative", "positive"], text="sentence")
    spec = JobSpec(model=str(model_dir), template=template, recipe=RecipeConfig(steps=3, batch_size=4, max_length=96),
                   eval_methods=["zero-shot", "in-context", "t-few"])
    train, held = rows[:24], rows[24:]
    result = run_job(spec, train, held, work_dir=tmp_path / "w", out_dir=tmp_path / "a", progress=lambda e: None,
                     device="cpu")
    stored = json.loads((tmp_path / "a" / "ia3_config.json").read_text())
    assert stored["template"]["chat"] is True

    loaded = load_model(str(model_dir), device="cpu")
    examples = fit_examples(template, held, render_all(template, held), loaded.tokenizer, 96).examples
    wrapped = wrap_examples(loaded.tokenizer, examples, True)
    assert all(len(loaded.tokenizer(ex.input)["input_ids"]) <= 96 for ex in wrapped)  # room left for the wrap
    base = score_choices(loaded.model, loaded.tokenizer, wrapped, max_length=96)
    zero = result.evaluation["methods"]["zero-shot"]["probs"]
    assert [[round(p, 5) for p in s.probs] for s in base] == [[round(p, 5) for p in q] for q in zero]
    unwrapped = score_choices(loaded.model, loaded.tokenizer, examples, max_length=96)
    assert [s.probs for s in unwrapped] != [s.probs for s in base]  # the wrap changes what the model reads

    handle = inject(loaded.model)
    apply_adapter(handle, tmp_path / "a")
    tfew = score_choices(handle.model, loaded.tokenizer, wrapped, max_length=96)
    assert [[round(p, 4) for p in s.probs] for s in tfew] == \
        [[round(p, 4) for p in q] for q in result.evaluation["methods"]["t-few"]["probs"]]

    engine = ServingEngine()
    try:
        served = engine.submit(tmp_path / "a", [{"sentence": r["sentence"]} for r in held]).result(timeout=600)
    finally:
        engine.close()
    assert [round(p.scores[0], 4) for p in served] == [round(s.scores[0], 4) for s in tfew]


def test_in_context_prompts_wrap_demonstrations_and_query_as_one_turn(tiny_model_dir, rows):
    from ia3app.adapters.ia3 import inject
    from ia3app.evaluation.compare import evaluate_methods
    from ia3app.templates.rendering import render_all

    loaded = load_model(str(tiny_model_dir("llama", chat=True)), device="cpu")
    handle = inject(loaded.model)
    template = builtin("sentiment", label_values=["negative", "positive"], text="sentence")
    train, held = render_all(template, rows[:8]), render_all(template, rows[28:])
    seen = []
    original = loaded.tokenizer.apply_chat_template

    def spy(messages, **kw):
        seen.append(messages)
        return original(messages, **kw)

    loaded.tokenizer.apply_chat_template = spy
    report = evaluate_methods(loaded, handle, train, held, methods=["in-context"], max_length=96, chat=True,
                              warmup=False)
    prompts = [m[0]["content"] for m in seen if len(m) == 1 and "\n\n" in m[0]["content"]]
    assert len(prompts) == len(held) and all(len(m) == 1 and m[0]["role"] == "user" for m in seen)
    assert all(p.endswith(q.input) for p, q in zip(prompts, held))  # the query last, inside the user's turn
    demos = [p.count("\n\n") for p in prompts]  # demonstrations, each followed by a blank line
    assert round(sum(demos) / len(demos), 1) == report["methods"]["in-context"]["shots"] and min(demos) >= 1
    assert TINY_CHAT_TEMPLATE  # the prompt is one user turn of that template, demonstrations inside it
