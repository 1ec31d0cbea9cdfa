"""T-Few's own few-shot samples as real evaluation sets (bench/data/tfew_fewshot/, MIT, see its README).

Each task's CSV holds every seed's sample, one row per (seed, example), with the task's columns,
a readable `label`, T-Few's `idx` and the `seed` whose sample the row belongs to. The evaluation
protocol of the accuracy bench: train on one seed's sample, evaluate on the rows of the other
seeds that are not in it (deduplicated by `idx`).

    python -m bench.tfew_data --from-git /path/to/t-few/.git   # rebuild the CSVs from T-Few's repo

`TASKS` says, per task, which built-in template reads it and which columns fill its roles.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "tfew_fewshot"
META = ("idx", "seed")


@dataclass(frozen=True)
class Task:
    name: str
    folder: str  # data/few_shot/<folder>/<k>_shot in T-Few's repository
    template: str  # a built-in template of ia3app.templates.library
    columns: dict = field(default_factory=dict)  # role -> column, for ia3app.templates.library.builtin


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("sst2", "sst2/16_shot", "sentiment", {"text": "sentence"}),
    Task("rte", "rte/32_shot", "nli2"),
    Task("cb", "cb/32_shot", "nli3"),
    Task("anli-r1", "anli-r1/50_shot", "nli3"),
    Task("anli-r2", "anli-r2/50_shot", "nli3"),
    Task("anli-r3", "anli-r3/50_shot", "nli3"),
    Task("boolq", "boolq/32_shot", "yes_no_question"),
    Task("wic", "wic/32_shot", "word_sense"),
    Task("wsc", "wsc/32_shot", "coreference"),
    Task("copa", "copa/32_shot", "cause_effect"),
    Task("winogrande", "winogrande/50_shot", "multiple_choice",
         {"question": "sentence", "options": ("option1", "option2")}),
    Task("storycloze", "storycloze/70_shot", "multiple_choice",
         {"question": "story", "options": ("ending1", "ending2")}),
    Task("h-swag", "h-swag/20_shot", "multiple_choice",
         {"question": "context", "options": ("ending1", "ending2", "ending3", "ending4")}),
]}

_NO_YES = {0: "false", 1: "true"}


def _row(task: str, r: dict) -> dict:
    """One T-Few jsonl record -> the CSV's columns (readable labels; T-Few's label ids as documented upstream)."""
    if task == "sst2":
        return {"sentence": r["sentence"].strip(), "label": ["negative", "positive"][r["label"]]}
    if task == "rte":
        return {"premise": r["premise"], "hypothesis": r["hypothesis"],
                "label": ["entailment", "not_entailment"][r["label"]]}
    if task == "cb":
        return {"premise": r["premise"], "hypothesis": r["hypothesis"],
                "label": ["entailment", "contradiction", "neutral"][r["label"]]}
    if task.startswith("anli"):
        return {"premise": r["premise"], "hypothesis": r["hypothesis"],
                "label": ["entailment", "neutral", "contradiction"][r["label"]]}
    if task == "boolq":
        return {"passage": r["passage"], "question": r["question"], "label": _NO_YES[r["label"]]}
    if task == "wic":
        return {"word": r["word"], "sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": _NO_YES[r["label"]]}
    if task == "wsc":
        return {"text": r["text"], "span1_text": r["span1_text"], "span2_text": r["span2_text"],
                "label": _NO_YES[r["label"]]}
    if task == "copa":
        return {k: r[k] for k in ("premise", "question", "choice1", "choice2")} | {"label": str(r["label"])}
    if task == "winogrande":
        return {"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "label": str(r["answer"])}
    if task == "storycloze":
        story = " ".join(r[f"input_sentence_{i}"] for i in range(1, 5))
        return {"story": story, "ending1": r["sentence_quiz1"], "ending2": r["sentence_quiz2"],
                "label": str(r["answer_right_ending"])}
    if task == "h-swag":
        return {"context": r["ctx"]} | {f"ending{i + 1}": e for i, e in enumerate(r["endings"])} | {"label": str(r["label"] + 1)}
    raise KeyError(task)


def convert(git_dir: Path, out: Path = DATA) -> None:
    """Write one CSV per task from T-Few's repository (`git show` of data/few_shot/...)."""
    out.mkdir(parents=True, exist_ok=True)
    for task in TASKS.values():
        listing = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "--name-only", "HEAD",
                                  f"data/few_shot/{task.folder}/"], check=True, capture_output=True, text=True)
        rows = []
        for path in sorted(listing.stdout.split(), key=lambda p: int(Path(p).name.split("_")[0])):
            seed = int(Path(path).name.split("_")[0])
            text = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], check=True,
                                  capture_output=True, text=True).stdout
            rows += [_row(task.name, r) | {"idx": r["idx"], "seed": seed} for r in map(json.loads, text.splitlines())]
        with open(out / f"{task.name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def seeds(task: str) -> list[int]:
    return sorted({int(r["seed"]) for r in read_all(task)})


def read_all(task: str) -> list[dict]:
    """Every row of the task's CSV: every seed's sample, with the `idx` and `seed` columns."""
    with open(DATA / f"{task}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def split(task: str, train_seed: int, max_eval: int | None = None) -> tuple[list[dict], list[dict]]:
    """(training rows = seed's sample, unseen rows = the other seeds' rows not in it, first max_eval).

    Rows come without the `idx`/`seed` bookkeeping columns, as a user's CSV would.
    """
    rows = read_all(task)
    train = [r for r in rows if int(r["seed"]) == train_seed]
    if not train:
        raise ValueError(f"{task} has no sample for seed {train_seed}; seeds: {seeds(task)}")
    seen = {r["idx"] for r in train}
    unseen: dict[str, dict] = {}
    for r in rows:
        if r["idx"] not in seen:
            unseen.setdefault(r["idx"], r)
    strip = lambda r: {k: v for k, v in r.items() if k not in META}  # noqa: E731
    held = [strip(r) for r in unseen.values()]
    random.Random(0).shuffle(held)  # a fixed mix of the other seeds' rows, whatever max_eval
    return [strip(r) for r in train], held[:max_eval] if max_eval else held


def as_csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="rebuild bench/data/tfew_fewshot/*.csv from T-Few's repository")
    p.add_argument("--from-git", required=True, type=Path, help="the git directory of r-three/t-few")
    convert(p.parse_args().from_git)
