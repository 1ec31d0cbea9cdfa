"""T-Few's released T0-3B vectors: every key maps, shapes match, values land in the right layer."""

import json
import shutil

import pytest
import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from ia3app.errors import UserError
from ia3app.adapters.ia3 import inject
from ia3app.adapters.tfew_vectors import (
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


@pytest.fixture
def upstream(tmp_path, released):
    """A local HTTP server standing in for T-Few's repository (no network here): (url_of, folder)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "upstream"
    folder.mkdir()
    shutil.copy(released, folder / "t03b_ia3_finish.pt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield (lambda name: f"http://127.0.0.1:{server.server_port}/{name}"), folder
    server.shutdown()


def test_resolve_local_path_and_cached_download(tmp_path, released, upstream):
    assert resolve_tfew_vectors(released, tmp_path / "cache") == released
    assert resolve_tfew_vectors(str(released), None, expected_sha256=TFEW_SHA256) == released
    with pytest.raises(UserError, match="not found"):
        resolve_tfew_vectors(tmp_path / "absent.pt", tmp_path / "cache")

    url_of, folder = upstream
    url = url_of("t03b_ia3_finish.pt")
    cache = tmp_path / "cache"
    first = resolve_tfew_vectors(url, cache, allowed_urls={url})
    assert first.parent == cache and first.read_bytes() == released.read_bytes()
    record = json.loads(first.with_name(first.name + ".json").read_text())
    assert record == {"url": url, "sha256": TFEW_SHA256, "bytes": released.stat().st_size}
    assert not [p for p in cache.iterdir() if p.name.endswith((".part", ".tmp"))]

    (folder / "t03b_ia3_finish.pt").unlink()  # a cache hit must not touch the source again
    assert resolve_tfew_vectors(url, cache, allowed_urls={url}) == first
    assert len(load_tfew_vectors(first)) == 192

    with first.open("r+b") as f:  # damage the cached copy
        f.seek(100)
        f.write(b"\0\0\0\0")
    with pytest.raises(UserError, match="do not match their recorded sha256"):
        resolve_tfew_vectors(url, cache, allowed_urls={url})


def test_download_failures_leave_nothing_behind(tmp_path, released, upstream):
    url_of, folder = upstream
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="could not download"):
        resolve_tfew_vectors(url_of("missing.pt"), cache, allowed_urls={url_of("missing.pt")})
    url = url_of("t03b_ia3_finish.pt")
    with pytest.raises(UserError, match="not the expected"):
        resolve_tfew_vectors(url, cache, expected_sha256="0" * 64, allowed_urls={url})
    with pytest.raises(UserError, match="larger than 1,000 bytes"):
        resolve_tfew_vectors(url, cache, allowed_urls={url}, max_bytes=1000)
    assert list(cache.iterdir()) == []
    with pytest.raises(UserError, match="cache folder"):
        resolve_tfew_vectors(url, None, allowed_urls={url})


def test_vectors_only_from_the_allow_list_and_the_data_dir(tmp_path, released, upstream, monkeypatch):
    """Issue 14: file:// and internal URLs are refused before anything is read or fetched; paths must
    be inside the data directory; a wrong file is refused by size or hash as a user error."""
    import urllib.request

    from ia3app.adapters.tfew_vectors import check_source

    data = tmp_path / "data"
    (data / "tfew").mkdir(parents=True)
    shutil.copy(released, data / "tfew" / "t03b_ia3_finish.pt")
    url_of, _ = upstream
    fetched: list[str] = []

    def no_fetch(url, *args, **kwargs):  # a refused source is refused before any connection is tried
        fetched.append(str(url))
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(urllib.request, "urlopen", no_fetch)
    for source, message in [
        ("file:///etc/passwd", "file:// addresses elsewhere are refused"),
        (url_of("t03b_ia3_finish.pt"), "http:// addresses elsewhere are refused"),
        ("http://169.254.169.254/latest/meta-data/", "http:// addresses elsewhere are refused"),
        ("/etc/passwd", "must be a file inside the data directory"),
        (str(data / ".." / "data" / ".." / "x.pt"), "must be a file inside the data directory"),
    ]:
        with pytest.raises(UserError, match=message):
            resolve_tfew_vectors(source, tmp_path / "cache", allowed_dirs=[data])
    assert fetched == []
    assert not (tmp_path / "cache").exists()  # nothing was copied anywhere
    check_source(str(data / "tfew" / "t03b_ia3_finish.pt"), allowed_dirs=[data])
    assert resolve_tfew_vectors(data / "tfew" / "t03b_ia3_finish.pt", allowed_dirs=[data]).is_file()
    bogus = data / "tfew" / "other.pt"
    bogus.write_bytes(b"not vectors at all")
    with pytest.raises(UserError, match="is not T-Few's released vectors file"):
        resolve_tfew_vectors(bogus, allowed_dirs=[data])
    (data / "tfew" / "big.pt").write_bytes(b"\0" * 17_000_000)
    with pytest.raises(UserError, match="T-Few's vectors are under 16,000,000"):
        resolve_tfew_vectors(data / "tfew" / "big.pt", allowed_dirs=[data])
    with pytest.raises(UserError, match="not a readable tensors-only PyTorch checkpoint"):
        load_tfew_vectors(bogus)  # read without the hash check: still a user error, never a crash
