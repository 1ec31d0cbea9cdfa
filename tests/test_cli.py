"""The CLI through main(argv) and one real subprocess: train -> predict -> evaluate -> export."""

import csv
import io
import json
import subprocess
import sys

import pytest

from ia3app.cli.main import main

ROOT_ROWS = "sentence,label\n" + "".join(
    f"film {i} was {'great' if i % 2 else 'awful'},{'positive' if i % 2 else 'negative'}\n" for i in range(8)
)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "train.csv").write_text(ROOT_ROWS)
    (root / "held.csv").write_text(ROOT_ROWS.replace("film ", "movie "))
    code = main([
        "train", "--csv", str(root / "train.csv"), "--template", "sentiment", "--column", "text=sentence",
        "--model", str(tiny_model_dir("t0")), "--out", str(root / "adapter"), "--steps", "3", "--batch-size", "2",
        "--eval-csv", str(root / "held.csv"), "--methods", "zero-shot", "t-few", "--quiet", "--device", "cpu",
    ])
    assert code == 0
    return root


def test_train_writes_an_adapter_and_prints_the_comparison(trained, capsys):
    out = trained / "adapter"
    assert (out / "adapter.safetensors").is_file() and (out / "peft").is_dir()
    assert not (out / ".work").exists()  # checkpoints removed after success
    results = json.loads((out / "results.json").read_text())
    assert set(results["evaluation"]["methods"]) == {"zero-shot", "t-few"}
    recipe = results["recipe"]
    assert recipe["steps"] == 3 and recipe["warmup_steps"] is None and recipe["warmup_ratio"] == 0.06  # 6 % of 3: 0


def test_predict_text_csv_and_jsonl(trained, capsys, tmp_path):
    adapter = str(trained / "adapter")
    assert main(["predict", "--adapter", adapter, "--text", "a great film", "--text", "awful", "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["sentence"] == "a great film"
    assert lines[0]["label"] in ("negative", "positive") and set(lines[0]["probabilities"]) == {"negative", "positive"}

    out = tmp_path / "pred.csv"
    assert main(["predict", "--adapter", adapter, "--csv", str(trained / "held.csv"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 8 and {"prediction", "predicted_choice", "prob_negative", "prob_positive"} <= set(rows[0])


def test_evaluate_three_way(trained, capsys, tmp_path):
    js = tmp_path / "eval.json"
    code = main(["evaluate", "--adapter", str(trained / "adapter"), "--csv", str(trained / "held.csv"),
                 "--train-csv", str(trained / "train.csv"), "--json", str(js), "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("zero-shot", "in-context", "t-few", "accuracy", "in-context / t-few"):
        assert word in text
    assert set(json.loads(js.read_text())["methods"]) == {"zero-shot", "in-context", "t-few"}


def test_export_peft_and_merged(trained, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    code = main(["export", "--adapter", str(trained / "adapter"), "--peft", str(tmp_path / "peft"),
                 "--merged", str(tmp_path / "merged"), "--device", "cpu"])
    assert code == 0
    assert (tmp_path / "peft" / "adapter_config.json").is_file()
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged")
    assert not any("ia3" in n for n, _ in model.named_parameters())


def test_templates_and_tiny_model(tmp_path, capsys):
    assert main(["templates"]) == 0
    assert "sentiment" in capsys.readouterr().out
    (tmp_path / "d.csv").write_text(ROOT_ROWS)
    assert main(["templates", "--csv", str(tmp_path / "d.csv"), "--rows", "2"]) == 0
    assert "(* = correct answer)" in capsys.readouterr().out
    assert main(["make-tiny-model", "gpt2", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--adapter", "/nowhere", "--text", "x"], "does not exist"),
        (["templates", "--csv", "/nowhere.csv"], "does not exist"),
        (["train", "--csv", "{csv}", "--template", "nope", "--model", "m", "--out", "{tmp}/o"], "no built-in template named 'nope'"),
        (["train", "--csv", "{csv}", "--template", "sentiment", "--model", "{tmp}/missing", "--out", "{tmp}/o",
          "--column", "text=sentence"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "d.csv").write_text(ROOT_ROWS)
    argv = [a.format(csv=tmp_path / "d.csv", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # progress lines (e.g. "loading ...") may come before it
    assert last.startswith("error: ") and message in last and "Traceback" not in err
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1


def test_subprocess_entry_point(trained):
    """`python -m ia3app` itself: a UserError is one line and exit 2 (success paths run through main above)."""
    proc = subprocess.run([sys.executable, "-m", "ia3app", "predict", "--adapter", str(trained / "nope"), "--text", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
