"""Parameter report: exact T-Few counts for T0-3B and T0 11B, built on the meta device."""

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from ia3app.adapters.files import WEIGHTS_NAME, save_adapter
from ia3app.adapters.ia3 import inject
from ia3app.adapters.params import ParamReport, full_model_bytes, parameter_report


def t0_config(d_model, d_kv, heads, d_ff):
    config = T5Config(
        d_model=d_model,
        d_kv=d_kv,
        num_heads=heads,
        d_ff=d_ff,
        num_layers=24,
        num_decoder_layers=24,
        feed_forward_proj="gated-gelu",
        vocab_size=32128,
        tie_word_embeddings=False,  # v1.1: no decoder-output scaling
    )
    return config


# T0-3B (T5 v1.1 XL shapes): d_model 2048, inner attention dim 32 * 64 = 2048, d_ff 5120.
T0_3B = dict(d_model=2048, d_kv=64, heads=32, d_ff=5120)
# T0 11B (T5 v1.1 XXL shapes): inner attention dim 64 * 64 = 4096, d_ff 10240, as in the paper.
T0_11B = dict(d_model=4096, d_kv=64, heads=64, d_ff=10240)


def base_count(d_model, d_kv, heads, d_ff, layers=24, vocab=32128):
    """T5 v1.1 parameters by hand: untied embedding + head, no biases, RMSNorm weights."""
    inner = d_kv * heads
    attn = 4 * d_model * inner
    ffn = 3 * d_model * d_ff
    encoder = layers * (attn + ffn + 2 * d_model) + d_model
    decoder = layers * (2 * attn + ffn + 3 * d_model) + d_model
    rel_bias = 2 * 32 * heads  # relative-position buckets of the first block, encoder and decoder
    return 2 * vocab * d_model + encoder + decoder + rel_bias


BASE_3B = base_count(**T0_3B)  # 2,849,757,184: "T0-3B"
BASE_11B = base_count(**T0_11B)  # 11,135,332,352: "T0 11B"


def meta_handle(shape):
    with torch.device("meta"):
        model = T5ForConditionalGeneration(t0_config(**shape))
        # transformers 5 always ties lm_head to the shared embedding in a fresh T5; T0's checkpoints
        # have their own head (from_pretrained keeps it untied), so give it one to count T0's parameters.
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    return inject(model)


@pytest.mark.parametrize(
    "shape, added, base",
    [(T0_3B, 540_672, BASE_3B), (T0_11B, 1_081_344, BASE_11B)],
    ids=["T0-3B", "T0-11B"],
)
def test_tfew_parameter_counts_on_meta_device(shape, added, base):
    handle = meta_handle(shape)
    assert next(handle.model.parameters()).device.type == "meta"
    report = parameter_report(handle)
    assert report.added == added
    assert report.base == base
    assert report.fraction == pytest.approx(added / base)
    # fp32 vectors plus a small safetensors header
    assert added * 4 < report.adapter_bytes < added * 4 + 30_000
    assert parameter_report(handle.model) == report  # the model alone gives the same answer
    assert full_model_bytes(handle) == base * 4
    assert full_model_bytes(handle, torch.bfloat16) == base * 2


def test_paper_fractions():
    small = parameter_report(meta_handle(T0_3B))
    assert 0.0001 < small.fraction < 0.0003  # "~0.02 %"
    assert f"{small.added:,}" in small.summary()


def test_report_matches_real_file_and_tied_weights_count_once(tiny_model_dir, tmp_path):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir("t5")).eval()  # v1.0: tied embeddings
    unique = sum(p.numel() for p in model.parameters())
    handle = inject(model)
    report = parameter_report(handle)
    assert isinstance(report, ParamReport)
    assert report.base == unique
    assert report.added == handle.num_added_parameters() == 2 * (2 * 64 + 128) + 2 * (4 * 64 + 128)
    save_adapter(handle, tmp_path, base_model="tiny-t5")
    assert report.adapter_bytes == (tmp_path / WEIGHTS_NAME).stat().st_size
    assert set(report.to_dict()) == {"base", "added", "fraction", "adapter_bytes"}


def test_plain_model_has_no_added_parameters(tiny_model_dir):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir("t0"))
    report = parameter_report(model)
    assert report.added == 0 and report.adapter_bytes == 0 and report.base > 0
