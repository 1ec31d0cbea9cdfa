"""CLI parity with the web app: same checks and words, --column NAME=COLUMN for template files,
--text-column as the data page's ticks, and a bad file refused at once (no torch import)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ia3app.cli.main import METHODS, TINY_KINDS, main

DATA = Path(__file__).parent / "data"


def test_constants_match_the_modules_that_import_torch():
    from ia3app.evaluation.compare import METHODS as EVAL_METHODS
    from ia3app.backbones.tiny import KINDS

    assert METHODS == EVAL_METHODS and TINY_KINDS == KINDS


@pytest.mark.parametrize("command", ["templates", "train"])
def test_empty_file_is_refused_fast_without_importing_torch(tmp_path, command):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    extra = ["--model", "m", "--out", str(tmp_path / "o")] if command == "train" else []
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ia3app", command, "--csv", str(empty), *extra],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 2 and "error: the file is empty" in proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")]
    # "fast" is this: refused before torch, transformers or gradio is imported (no wall-clock bound)
    assert not [m for m in imported if m.split(".")[0] in ("torch", "transformers", "gradio")]


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_templates_shows_the_shape_and_the_fitting_builtin(capsys):
    code, out, _ = run(["templates", "--csv", str(DATA / "winogrande_like.csv"), "--rows", "1"], capsys)
    assert code == 0 and "label column 'answer'; the model reads: multiple choice" in out
    assert "fitting built-ins: multiple_choice, multiple_choice_fill, multiple_choice_pick;" in out and "* Sarah" in out
    code, out, _ = run(["templates", "--csv", str(DATA / "spam_like.csv"), "--rows", "1"], capsys)
    assert "fitting built-ins: text_label, text_label_pick, text_label_after, sentiment, sentiment_said, " \
        "sentiment_following;" in out  # three wordings of each fitting task (issue 23 item 10)


def test_text_column_picks_what_the_model_reads(capsys):
    code, out, _ = run(["templates", "--csv", str(DATA / "wsc_like.csv"), "--text-column", "text"], capsys)
    assert code == 0 and "fitting built-ins: text_label, text_label_pick, text_label_after, sentiment" in out
    assert "is marked as text" not in out
    code, _, err = run(["templates", "--csv", str(DATA / "wsc_like.csv"), "--text-column", "nope"], capsys)
    assert code == 2 and "--text-column nope: no such column" in err


def test_templates_runs_the_data_pages_label_checks(tmp_path, capsys):
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\nb,x\n")
    code, _, err = run(["templates", "--csv", str(one)], capsys)
    assert code == 2 and "every row has the label 'x' in column 'label'; a classifier needs at least two" in err
    dec = tmp_path / "dec.csv"
    dec.write_text("text,label\n" + "".join(f"t{i},{i % 2}.0\n" for i in range(8)))
    code, out, _ = run(["templates", "--csv", str(dec), "--template", "text_label"], capsys)
    assert code == 0 and "warning: the labels look like decimal numbers" in out


def test_column_mapping_for_a_template_file(tmp_path, capsys):
    spec = {"name": "mine", "input": "{{ sentence }}\nWhich one fills the blank?", "label_column": "label",
            "choice_templates": ["{{ first }}", "{{ second }}"], "choice_labels": ["1", "2"]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(spec))
    argv = ["templates", "--csv", str(DATA / "winogrande_like.csv"), "--template", str(path), "--rows", "1"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "label column 'label' is not in the file" in err
    code, _, err = run(argv + ["--column", "label=answer"], capsys)
    assert code == 2 and "column 'first' used by the template is not in the file" in err
    code, out, err = run(argv + ["--column", "first=option1", "--column", "second=option2",
                                 "--column", "label=answer"], capsys)
    assert code == 0 and "* Sarah" in out, err
    code, _, err = run(argv + ["--column", "first=nope"], capsys)
    assert code == 2 and "'nope' is not a column of the file" in err
