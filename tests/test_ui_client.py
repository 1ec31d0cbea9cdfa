"""The app through gradio_client, signed in: the prediction API answers its owner and nobody else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from apps import USERS

from ia3app.config import RecipeConfig
from ia3app.jobtypes import JobResult, loads

ROOT = Path(__file__).resolve().parent.parent
CSV = "sentence,label\n" + "".join(
    f"{'a fine film' if i % 2 else 'a dull mess'} {i},{'positive' if i % 2 else 'negative'}\n" for i in range(12)
)


def client(url, who):
    from gradio_client import Client

    return Client(url, auth=who, verbose=False)


def test_sign_in_is_required(signed_in_site):
    url = signed_in_site.url
    with pytest.raises(ValueError, match="Could not login"):
        client(url, ("alice", "wrong password"))


def test_unknown_job_answers_nothing(signed_in_site):
    url = signed_in_site.url
    with pytest.raises(Exception, match="not one of your jobs"):
        client(url, ("bob", USERS["bob"])).predict(job_id=999, inputs={"sentence": "hi"}, api_name="/predict")


@pytest.fixture(scope="module")
def finished_job(signed_in_site, tmp_path_factory):
    """A tiny job of alice's, trained for real by one worker run."""
    from jobs import queue
    from ui import template_page as T
    from ui import train_page as TR
    from ui import data_page as U

    ctx, alice = signed_in_site.ctx, signed_in_site.users["alice"]
    csv = tmp_path_factory.mktemp("csv") / "reviews.csv"
    csv.write_text(CSV)
    state = U.save_upload(ctx, alice, str(csv), "label", None, U.AUTO, None, 0.25, 0)
    spec = T.fitting_templates(state.columns, state.label_values, "label")["sentiment"]
    recipe = RecipeConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=0)
    config = TR.build_job_config(ctx, alice, state, spec, "tiny-demo", "", recipe, False, "",
                                 ["t-few"])
    job_id = queue.submit(ctx.db(), alice, config)
    subprocess.run([sys.executable, "-m", "jobs.worker", "--data-dir", str(ctx.data_dir), "--once", "--poll-s",
                    "0.2"], cwd=ROOT, check=True, timeout=300)
    job = queue.get_job(ctx.db(), job_id, alice)
    assert job.status == "succeeded", job.error_message
    return job_id


@pytest.mark.slow
def test_prediction_api_serves_the_owner_only(signed_in_site, finished_job):
    url = signed_in_site.url
    out = client(url, ("alice", USERS["alice"])).predict(job_id=finished_job, inputs={"sentence": "a fine film"},
                                                         api_name="/predict")
    assert out["choice"] in out["probabilities"] and abs(sum(out["probabilities"].values()) - 1) < 1e-4
    assert out["label"] in ("negative", "positive")  # the label as the data writes it, beside the answer word
    with pytest.raises(Exception, match="not one of your jobs"):
        client(url, ("bob", USERS["bob"])).predict(job_id=finished_job, inputs={"sentence": "a fine film"},
                                                    api_name="/predict")


@pytest.mark.slow
def test_results_and_zip_only_for_the_owner(signed_in_site, finished_job):
    from ia3app.errors import UserError
    from jobs import queue
    from storage import users
    from ui import owned_adapter as O
    from ui import results_page as R

    ctx, alice = signed_in_site.ctx, signed_in_site.users["alice"]
    bob = users.user_id(ctx.db(), "bob")
    view = R.results_view(ctx, alice, finished_job)
    assert "(IA)³ parameters trained and added" in view["params"] and view["columns"] == ["sentence"]
    with zipfile.ZipFile(O.build_zip(ctx, alice, finished_job)) as zf:
        assert {"adapter.safetensors", "ia3_config.json", "README.md", "results.json"} <= set(zf.namelist())
        stored = queue.get_job(ctx.db(), finished_job, alice).result
        assert loads(JobResult, zf.read("results.json")) == stored  # the job's result, as the download's file
    for fn in (R.results_view, O.build_zip):
        with pytest.raises(UserError, match="not one of your jobs"):
            fn(ctx, bob, finished_job)


def test_data_directory_is_never_served_as_a_file(signed_in_site):
    import httpx

    ctx, url = signed_in_site.ctx, signed_in_site.url
    with httpx.Client(base_url=url) as http:
        assert http.post("login", data={"username": "alice", "password": USERS["alice"]}).status_code == 200
        for target in (ctx.db_path, ctx.data_dir / "uploads"):
            response = http.get(f"gradio_api/file={target}")
            assert response.status_code in (403, 404), response.status_code


@pytest.mark.slow
def test_batch_predictions_come_back_as_a_csv(signed_in_site, finished_job, tmp_path):
    from ui import owned_adapter as O

    ctx, alice = signed_in_site.ctx, signed_in_site.users["alice"]
    source = tmp_path / "new.csv"
    source.write_text("sentence\na fine film\n=HYPERLINK(\"x\")\n")
    out = Path(O.predict_batch(ctx, alice, finished_job, str(source))).read_text()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("sentence,prediction,")
    assert lines[2].startswith("'=") or lines[2].startswith("\"'=")  # formula neutralised


@pytest.mark.slow
def test_json_api_is_mounted_on_the_app(signed_in_site, finished_job):
    """POST /v1/predict on the Gradio app's own port (the README's curl), beside the gradio_client route."""
    import httpx

    from storage import api_keys

    ctx, url = signed_in_site.ctx, signed_in_site.url
    _, key = api_keys.create_key(ctx.db(), "alice")
    _, bob_key = api_keys.create_key(ctx.db(), "bob")
    body = {"job_id": finished_job, "rows": [{"sentence": "a fine film"}]}
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("v1/predict", json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        assert pred["choice"] in pred["probabilities"] and abs(sum(pred["probabilities"].values()) - 1) < 1e-4
        assert http.post("v1/predict", json=body, headers={"Authorization": f"Bearer {bob_key}"}).status_code == 404
        assert http.post("v1/predict", json=body).status_code == 401
