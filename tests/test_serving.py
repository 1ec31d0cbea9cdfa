"""The serving engine on tiny models: same answers as each adapter alone (merged), mixed batches,
merged fast path, bank LRU and reload, failure isolation, CSV, settings."""

import csv
import io
import os
import threading

import pytest
from serving_helpers import PER_ROW, TEMPLATE, WORDS, Reference, assert_matches, make_adapter

from ia3app.errors import UserError
from ia3app.serving.engine import ServingConfig, ServingEngine

ROWS = [{"sentence": w} for w in WORDS[:5]]


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return tiny_model_dir("t0")


@pytest.fixture(scope="module")
def adapters(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-adapters")
    return [make_adapter(base, root / f"a{i}", seed=i) for i in range(4)]


@pytest.fixture(scope="module")
def reference(base):
    return Reference(base)


@pytest.fixture
def engine():
    e = ServingEngine(device="cpu")
    yield e
    e.close()


def test_single_adapter_matches_the_merged_model_and_merges_after_a_streak(engine, adapters, reference):
    a = adapters[0]
    want = reference.score(a, ROWS)
    first = engine.predict(a, ROWS)
    assert_matches(first, want)
    assert [p.label for p in first] == [{"bad": "negative", "good": "positive"}[p.choice] for p in first]
    assert list(first[0].probabilities) == ["bad", "good"]
    assert first[0].as_dict().keys() == {"label", "choice", "probabilities", "confidence", "unsure"}
    stats = engine.stats()["backbones"][0]
    assert (stats["merged_batches"], stats["merges"]) == (0, 0)  # first batch: unmerged
    for _ in range(2):
        assert_matches(engine.predict(a, ROWS), want)
    stats = engine.stats()["backbones"][0]
    assert stats["merged_batches"] == 2 and stats["merges"] == 1  # merged once, reused
    assert stats["merged_copy_bytes"] > 0 and engine.loads == 1
    # another adapter: unmerged again (no merge per switch), same answers as alone
    assert_matches(engine.predict(adapters[1], ROWS), reference.score(adapters[1], ROWS))
    assert engine.stats()["backbones"][0]["merges"] == 1


def test_concurrent_requests_for_many_adapters_share_mixed_batches(adapters, reference):
    engine = ServingEngine(device="cpu", max_wait_ms=50)
    want = {a: reference.score(a, ROWS) for a in adapters}
    results, errors = [], []
    barrier = threading.Barrier(8)

    def client(i):
        a = adapters[i % len(adapters)]
        barrier.wait()
        try:
            for j in range(3):
                rows = ROWS[j : j + 1 + i % 3]
                results.append((a, j, i % 3, engine.predict(a, rows, timeout=60)))
        except Exception as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    assert not errors
    assert len(results) == 24
    for a, j, extra, preds in results:
        assert_matches(preds, want[a][j : j + 1 + extra])
    stats = engine.stats()
    assert stats["models_loaded"] == 1


def test_mixed_batches_happen(adapters, reference):
    engine = ServingEngine(device="cpu", max_wait_ms=200)
    engine.predict(adapters[0], ROWS[:1])
    engine.predict(adapters[1], ROWS[:1])
    lane = engine._lanes[next(iter(engine._lanes))]
    lane._concurrent = True  # as after concurrent traffic: the batcher waits for more
    futures = [engine.submit(a, ROWS) for a in adapters]
    for a, f in zip(adapters, futures):
        assert_matches(f.result(timeout=60), reference.score(a, ROWS))
    stats = engine.stats()["backbones"][0]
    assert stats["mixed_batches"] >= 1 and stats["resident_adapters"] == 4
    engine.close()


def test_a_failing_request_does_not_affect_its_batch_neighbours(adapters, reference, tmp_path, tiny_model_dir):
    engine = ServingEngine(device="cpu", max_wait_ms=200)
    engine.predict(adapters[0], ROWS[:1])
    engine.predict(adapters[1], ROWS[:1])
    engine._lanes[next(iter(engine._lanes))]._concurrent = True
    other = make_adapter(tiny_model_dir("t0", d_model=32), tmp_path / "other", seed=9)
    # a damaged adapter whose config claims the right base: its vectors do not fit
    broken = make_adapter(tiny_model_dir("t0"), tmp_path / "broken", seed=3)
    (broken / "adapter.safetensors").write_bytes((other / "adapter.safetensors").read_bytes())
    futures = {
        "good0": engine.submit(adapters[0], ROWS),
        "missing": engine.submit(tmp_path / "nowhere", ROWS),
        "bad_row": engine.submit(adapters[1], [{"text": "no sentence column"}]),
        "not_rows": engine.submit(adapters[1], "hello"),
        "broken": engine.submit(broken, ROWS),
        "good2": engine.submit(adapters[2], ROWS[:2]),
    }
    assert_matches(futures["good0"].result(timeout=60), reference.score(adapters[0], ROWS))
    assert_matches(futures["good2"].result(timeout=60), reference.score(adapters[2], ROWS[:2]))
    with pytest.raises(UserError, match="does not exist"):
        futures["missing"].result()
    with pytest.raises(UserError, match="column 'sentence'"):
        futures["bad_row"].result()
    with pytest.raises(UserError, match="list of objects"):
        futures["not_rows"].result()
    with pytest.raises(UserError, match="disagree|do not fit"):
        futures["broken"].result(timeout=60)
    # an adapter of another shape goes to its own backbone and works there
    assert len(engine.predict(other, ROWS[:2])) == 2
    engine.close()


def test_adapter_for_a_different_model_is_refused(adapters, tmp_path, tiny_model_dir, engine):
    other = make_adapter(tiny_model_dir("t0", d_model=32), tmp_path / "other", seed=9)
    config = (other / "ia3_config.json").read_text()
    (other / "ia3_config.json").write_text(config.replace(str(tiny_model_dir("t0", d_model=32)), str(tiny_model_dir("t0"))))
    with pytest.raises(UserError, match="does not fit"):
        engine.predict(other, ROWS)
    assert len(engine.predict(adapters[0], ROWS)) == len(ROWS)


def test_bank_lru_within_budget_and_reload_on_change(adapters, reference, base, tmp_path):
    engine = ServingEngine(device="cpu", adapter_budget_mb=1e-9)  # room for one adapter
    for a in adapters[:3]:
        assert_matches(engine.predict(a, ROWS[:2]), reference.score(a, ROWS[:2]))
    stats = engine.stats()["backbones"][0]
    assert stats["max_resident_adapters"] == 1 and stats["resident_adapters"] == 1
    assert stats["evictions"] == 2 and stats["bank_bytes"] == 2 * stats["adapter_bytes"]  # one row + ones row
    # rewrite an adapter's files: the next request serves the new vectors
    folder = make_adapter(base, tmp_path / "changing", seed=20)
    assert_matches(engine.predict(folder, ROWS), reference.score(folder, ROWS))
    make_adapter(base, folder, seed=21)
    os.utime(folder / "adapter.safetensors", ns=(1, 1))  # even a clock that went back is a change
    assert_matches(engine.predict(folder, ROWS), reference.score(folder, ROWS))
    engine.close()


def test_merged_path_follows_a_file_change(base, reference, tmp_path):
    engine = ServingEngine(device="cpu", merge_after=1)
    folder = make_adapter(base, tmp_path / "m", seed=30)
    assert_matches(engine.predict(folder, ROWS), reference.score(folder, ROWS))
    make_adapter(base, folder, seed=31)
    assert_matches(engine.predict(folder, ROWS), reference.score(folder, ROWS))
    stats = engine.stats()["backbones"][0]
    assert stats["merged_batches"] == 2 and stats["merges"] == 2
    engine.close()


def test_per_row_choices_and_big_requests_split(base, reference, tmp_path):
    folder = make_adapter(base, tmp_path / "pr", seed=5, template=PER_ROW)
    rows = [{"q": w, "a": WORDS[(i + 1) % 10], "b": WORDS[(i + 2) % 10]} for i, w in enumerate(WORDS)] * 3
    engine = ServingEngine(device="cpu", max_batch_rows=4, merge="never")
    preds = engine.predict(folder, rows)
    assert_matches(preds, reference.score(folder, rows, PER_ROW), choices=None)
    assert all(isinstance(p.label, int) for p in preds)
    stats = engine.stats()["backbones"][0]
    assert stats["batches"] == 8 and stats["merged_batches"] == 0  # 30 rows in parts of 4
    engine.close()


def test_predict_csv(engine, adapters):
    data = "sentence,label\n" + "\n".join(f'"{r["sentence"]}",positive' for r in ROWS) + "\n"
    out = engine.predict_csv(adapters[0], data.encode())
    table = list(csv.DictReader(io.StringIO(out.decode())))
    assert list(table[0]) == ["sentence", "label", "prediction", "predicted_choice", "prob_bad", "prob_good",
                              "confidence", "best_guess"]
    assert table[3]["sentence"] == "'=SUM(A1)"  # formulas neutralised
    for row in table:
        assert abs(float(row["prob_bad"]) + float(row["prob_good"]) - 1) < 1e-5
        assert row["prediction"] in ("negative", "positive")


def test_empty_rows_and_settings(engine, adapters):
    assert engine.predict(adapters[0], []) == []
    with pytest.raises(UserError, match="max_batch_rows.*merge"):
        ServingConfig(max_batch_rows=0, merge="sometimes")
    assert TEMPLATE.name == "sentiment"


def test_a_long_row_keeps_its_question_as_in_training(engine, adapters, reference):
    """Predictions fit a long row like training does: the end of the longest field goes, not the question."""
    from ia3app.evaluation.scoring import score_choices
    from ia3app.templates.rendering import render_all
    from ia3app.templates.truncate import fit_examples

    rows = [{"sentence": "a wonderful film " * 20}]
    examples = render_all(TEMPLATE, rows)
    fitted = fit_examples(TEMPLATE, rows, examples, reference.loaded.tokenizer, 64).examples
    assert fitted[0].input.endswith("… Is it good or bad?")
    from ia3app.adapters.files import apply_adapter

    apply_adapter(reference.handle, adapters[0])
    want = score_choices(reference.loaded.model, reference.loaded.tokenizer, fitted, max_length=64)
    assert_matches(engine.predict(adapters[0], rows), want)


def test_length_chunks_bound_padding():
    from ia3app.serving.lane import length_chunks

    lengths = [100, 40, 200, 110, 105, 50, 45, 190]
    chunks = length_chunks(lengths)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for c in chunks:
        assert len(c) * max(lengths[i] for i in c) <= 1.25 * sum(lengths[i] for i in c)
    assert length_chunks([100] * 32) == [list(range(32))]  # similar rows: one forward


@pytest.mark.parametrize("kind", ["t0", "llama"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_merged_and_unmerged_paths_agree_within_the_stated_tolerance(tiny_model_dir, tmp_path, kind, dtype):
    """The engine's first batch of an adapter runs unmerged, the next ones merged: their answers differ by
    no more than MERGED_TOLERANCE says for the dtype (and the predictions are the same)."""
    from ia3app.serving.engine import MERGED_TOLERANCE

    base = tiny_model_dir(kind)
    folders = [make_adapter(base, tmp_path / f"a{i}", seed=i) for i in range(3)]
    rows = [{"sentence": w} for w in WORDS]
    tol = MERGED_TOLERANCE[dtype]
    engine = ServingEngine(device="cpu", dtype=dtype)
    try:
        def merged_batches():
            backbones = engine.stats()["backbones"]
            return backbones[0]["merged_batches"] if backbones else 0

        for folder in folders:
            before = merged_batches()
            unmerged = engine.predict(folder, rows)
            assert merged_batches() == before  # a new adapter's first batch: unmerged
            engine.predict(folder, rows)
            before = merged_batches()
            merged = engine.predict(folder, rows)
            assert merged_batches() == before + 1  # its third: merged
            for u, m in zip(unmerged, merged):
                assert max(abs(a - b) for a, b in zip(u.scores, m.scores)) <= tol["score"]
                assert max(abs(a - b) for a, b in zip(u.probabilities.values(), m.probabilities.values())) <= tol["probability"]
                assert u.choice == m.choice
    finally:
        engine.close()
