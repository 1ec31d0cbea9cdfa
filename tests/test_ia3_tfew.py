"""T-Few's released T0-3B vectors: every key maps, shapes match, values land in the right layer."""

import json
import shutil

import pytest
import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from ia3app.errors import UserError
from ia3app.ia3 import inject
from ia3app.tfew_vectors import (
    TFEW_SHA256,
    apply_tfew_vectors,
    convert_tfew_state_dict,
    load_tfew_vectors,
    resolve_tfew_vectors,
)


@pytest.fixture(scope="module")
def t0_3b_meta():
    """A T0-3B-shaped model on the meta device (no 11 GB allocation), (IA)^3 injected."""
    config = T5Config(
        d_model=2048, d_kv=64, num_heads=32, d_ff=5120, num_layers=24, num_decoder_layers=24,
        feed_forward_proj="gated-gelu", vocab_size=32128, tie_word_embeddings=False,
    )  # fmt: skip
    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
    return inject(model)


def materialise_vectors(handle):
    """Give the (meta) handle real vectors on the CPU, the base weights stay on meta."""
    for layer in handle.layers.values():
        layer.ia3 = nn.Parameter(torch.ones(layer.features))


@pytest.fixture
def released(tfew_vectors_path):
    return tfew_vectors_path


def test_every_released_key_maps_and_fits(t0_3b_meta, released):
    raw = torch.load(released, weights_only=True)
    vectors = load_tfew_vectors(released)
    assert len(raw) == len(vectors) == 192
    assert sum(v.numel() for v in vectors.values()) == 540_672
    assert set(vectors) == {k.replace(".multi_lora_b", ".ia3") for k in raw}
    t0_3b_meta.check_vectors(vectors)  # every key is one of our modules, lengths equal
    assert set(vectors) == set(t0_3b_meta.shapes())


def test_values_land_in_the_right_layer(t0_3b_meta, released):
    materialise_vectors(t0_3b_meta)
    raw = torch.load(released, weights_only=True)
    apply_tfew_vectors(t0_3b_meta, released)
    for probe in (
        "encoder.block.0.layer.0.SelfAttention.k",
        "decoder.block.3.layer.1.EncDecAttention.v",
        "decoder.block.23.layer.2.DenseReluDense.wi_1",
    ):
        layer = t0_3b_meta.layers[probe]
        assert torch.equal(layer.ia3.detach(), raw[probe + ".multi_lora_b"][:, 0])
    for name, layer in t0_3b_meta.layers.items():
        assert torch.equal(layer.ia3.detach(), raw[name + ".multi_lora_b"].reshape(-1)), name
    # the released vectors are trained: not all ones
    assert not torch.equal(t0_3b_meta.layers["encoder.block.0.layer.0.SelfAttention.k"].ia3, torch.ones(2048))


def test_missing_extra_and_misshaped_keys_are_clear_errors(t0_3b_meta, released):
    raw = torch.load(released, weights_only=True)
    missing = dict(raw)
    missing.pop("decoder.block.3.layer.1.EncDecAttention.v.multi_lora_b")
    with pytest.raises(UserError, match=r"1 missing \(e\.g\. decoder\.block\.3\.layer\.1\.EncDecAttention\.v\.ia3\)"):
        apply_tfew_vectors(t0_3b_meta, convert_tfew_state_dict(missing))
    extra = dict(raw) | {"decoder.block.24.layer.0.SelfAttention.k.multi_lora_b": torch.ones(2048, 1)}
    with pytest.raises(UserError, match="1 unexpected"):
        apply_tfew_vectors(t0_3b_meta, convert_tfew_state_dict(extra))
    short = dict(raw) | {"encoder.block.0.layer.0.SelfAttention.k.multi_lora_b": torch.ones(1024, 1)}
    with pytest.raises(UserError, match="1 mis-shaped .*1024 values, the model needs 2048"):
        apply_tfew_vectors(t0_3b_meta, convert_tfew_state_dict(short))
    with pytest.raises(UserError, match=r"shape \(2048, 2\), expected \(features, 1\)"):
        convert_tfew_state_dict({"encoder.block.0.layer.0.SelfAttention.k.multi_lora_b": torch.ones(2048, 2)})
    with pytest.raises(UserError, match="unexpected key .*lora_a"):
        convert_tfew_state_dict({"encoder.block.0.layer.0.SelfAttention.k.multi_lora_a": torch.ones(2048, 1)})


def test_wrong_family_and_unsafe_files_are_refused(tiny_model_dir, tmp_path, released):
    from transformers import AutoModelForCausalLM

    gpt2 = inject(AutoModelForCausalLM.from_pretrained(tiny_model_dir("gpt2")))
    with pytest.raises(UserError, match="T0-3B"):
        apply_tfew_vectors(gpt2, released)
    evil = tmp_path / "evil.pt"
    torch.save({"k.multi_lora_b": torch.ones(2, 1), "payload": shutil.copy}, evil)  # a pickled function
    with pytest.raises(UserError, match="tensors-only"):
        load_tfew_vectors(evil)
    with pytest.raises(UserError, match="not found"):
        load_tfew_vectors(tmp_path / "nope.pt")


def test_resolve_local_path_and_cached_download(tmp_path, released):
    assert resolve_tfew_vectors(released, tmp_path / "cache") == released
    assert resolve_tfew_vectors(str(released), None, expected_sha256=TFEW_SHA256) == released
    with pytest.raises(UserError, match="not found"):
        resolve_tfew_vectors(tmp_path / "absent.pt", tmp_path / "cache")

    source = tmp_path / "upstream" / "t03b_ia3_finish.pt"
    source.parent.mkdir()
    shutil.copy(released, source)
    url = source.as_uri()  # file:// stands in for the T-Few repository URL (no network here)
    cache = tmp_path / "cache"
    first = resolve_tfew_vectors(url, cache, expected_sha256=TFEW_SHA256)
    assert first.parent == cache and first.read_bytes() == released.read_bytes()
    record = json.loads(first.with_name(first.name + ".json").read_text())
    assert record == {"url": url, "sha256": TFEW_SHA256, "bytes": released.stat().st_size}
    assert not [p for p in cache.iterdir() if p.name.endswith((".part", ".tmp"))]

    source.unlink()  # a cache hit must not touch the source again
    assert resolve_tfew_vectors(url, cache) == first
    assert len(load_tfew_vectors(first)) == 192

    with first.open("r+b") as f:  # damage the cached copy
        f.seek(100)
        f.write(b"\0\0\0\0")
    with pytest.raises(UserError, match="do not match their recorded sha256"):
        resolve_tfew_vectors(url, cache)


def test_download_failures_leave_nothing_behind(tmp_path, released):
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="could not download"):
        resolve_tfew_vectors((tmp_path / "missing.pt").as_uri(), cache)
    with pytest.raises(UserError, match="not the expected"):
        resolve_tfew_vectors(released.as_uri(), cache, expected_sha256="0" * 64)
    assert list(cache.iterdir()) == []
    with pytest.raises(UserError, match="cache folder"):
        resolve_tfew_vectors(released.as_uri(), None)
