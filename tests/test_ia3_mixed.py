"""Mixed-task batches: each row of one batch uses its own adapter on one shared base model."""

import pytest
import torch
from tiny_batches import load_tiny, token_batch

from ia3app.errors import UserError
from ia3app.adapters.ia3 import inject

NAMES = ["a", None, "b", "a", "c"]  # one adapter name (or the base model) per row


def load(tiny_model_dir, kind):
    return load_tiny(tiny_model_dir, kind)


def batch(kind, rows):
    inputs = token_batch(kind, rows=rows, length=9, decoder_length=4, seed=2)
    mask = torch.ones_like(inputs["input_ids"])
    mask[1, 6:] = 0  # one padded row
    return {**inputs, "attention_mask": mask}


def random_vectors(handle, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.empty(n).uniform_(0.3, 1.7, generator=g) for k, n in handle.shapes().items()}


@pytest.mark.parametrize("kind", ("t0", "t5", "bart", "gpt2", "llama"))
def test_each_row_equals_its_adapter_alone(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind))
    adapters = {name: random_vectors(handle, seed) for seed, name in enumerate("abc")}
    for name, vectors in adapters.items():
        handle.add_adapter(name, vectors)
    inputs = batch(kind, len(NAMES))
    with torch.no_grad():
        with handle.mixed_batch(NAMES):
            mixed = handle.model(**inputs).logits  # (B, T, V)
        alone = {}
        for name in {n for n in NAMES if n is not None}:
            handle.load_vectors(adapters[name])
            alone[name] = handle.model(**inputs).logits
        handle.reset()
        alone[None] = handle.model(**inputs).logits
    for row, name in enumerate(NAMES):
        torch.testing.assert_close(mixed[row], alone[name][row], rtol=1e-5, atol=1e-5)
    # and the adapters really differ, so the test can tell rows apart
    assert not torch.allclose(alone["a"][0], alone["b"][0], atol=1e-3)


def test_mixed_rows_match_single_row_runs(tiny_model_dir):
    """Row results do not depend on the other rows of the batch (here: batch of 1 per adapter)."""
    handle = inject(load(tiny_model_dir, "t0"))
    handle.add_adapter("a", random_vectors(handle, 0))
    handle.add_adapter("b", random_vectors(handle, 1))
    inputs = batch("t0", 2)
    with torch.no_grad(), handle.mixed_batch(["a", "b"]):
        mixed = handle.model(**inputs).logits
    for row, name in enumerate(["a", "b"]):
        one = {k: v[row : row + 1] for k, v in inputs.items()}
        with torch.no_grad(), handle.mixed_batch([name]):
            single = handle.model(**one).logits
        torch.testing.assert_close(mixed[row : row + 1], single, rtol=1e-5, atol=1e-5)


def test_bank_is_scoped_and_checked(tiny_model_dir):
    handle = inject(load(tiny_model_dir, "gpt2"))
    handle.add_adapter("a", random_vectors(handle, 0))
    assert handle.adapter_names == ["a"]
    with pytest.raises(UserError, match="unknown adapter"):
        with handle.mixed_batch(["a", "zzz"]):
            pass
    bad = random_vectors(handle, 1)
    bad.pop(next(iter(bad)))
    with pytest.raises(UserError, match="missing"):
        handle.add_adapter("bad", bad)
    inputs = batch("gpt2", 3)
    with pytest.raises(RuntimeError, match="expand the adapter names"):
        with torch.no_grad(), handle.mixed_batch(["a", None]):
            handle.model(**inputs)
    assert handle.state.row_ids is None  # the context restores the single-adapter mode
    handle.add_adapter("a", random_vectors(handle, 5))  # replacing keeps one entry
    handle.remove_adapter("a")
    assert handle.adapter_names == []


def test_mixed_batch_trains_per_row_bank_not_active_vector(tiny_model_dir):
    """Inside a mixed batch the active trainable vectors are not used (rows name their adapter)."""
    handle = inject(load(tiny_model_dir, "llama"))
    handle.add_adapter("a", random_vectors(handle, 0))
    inputs = batch("llama", 2)
    with torch.no_grad():
        with handle.mixed_batch(["a", None]):
            first = handle.model(**inputs).logits
        handle.load_vectors(random_vectors(handle, 9))
        with handle.mixed_batch(["a", None]):
            second = handle.model(**inputs).logits
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ("t0", "gpt2", "llama"))
def test_mixed_batch_on_cuda(tiny_model_dir, kind):
    handle = inject(load(tiny_model_dir, kind).to("cuda"))
    adapters = {name: random_vectors(handle, seed) for seed, name in enumerate("abc")}
    for name, vectors in adapters.items():
        handle.add_adapter(name, vectors)
    inputs = {k: v.to("cuda") for k, v in batch(kind, len(NAMES)).items()}
    with torch.no_grad():
        with handle.mixed_batch(NAMES):
            mixed = handle.model(**inputs).logits
        for row, name in enumerate(NAMES):
            if name is None:
                handle.reset()
            else:
                handle.load_vectors(adapters[name])
            alone = handle.model(**inputs).logits
            scale = max(1.0, alone[row].abs().max().item())
            assert (mixed[row] - alone[row]).abs().max().item() <= 1e-5 * scale


class CountIndexOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the gathers (aten.index.Tensor) a forward runs."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.index.Tensor
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ("t0", "gpt2", "llama"))
def test_a_mixed_forward_gathers_the_bank_once_not_once_per_layer(tiny_model_dir, kind):
    """All layers' vectors of a mixed batch come from one gather (and one cast), each layer a slice of it."""
    handle = inject(load(tiny_model_dir, kind))
    for seed, name in enumerate("abc"):
        handle.add_adapter(name, random_vectors(handle, seed))
    inputs = batch(kind, len(NAMES))
    counts = {}
    with torch.no_grad():
        for mode, names in (("plain", None), ("mixed", NAMES)):
            with CountIndexOps() as counter:
                if names is None:
                    handle.model(**inputs)
                else:
                    with handle.mixed_batch(names):
                        handle.model(**inputs)
            counts[mode] = counter.count
    assert len(handle.layers) >= 4  # the per-layer gather of before would count one per layer
    assert counts["mixed"] - counts["plain"] == 1
    # and the bank is one tensor: every layer's rows are a view of it
    assert all(layer.bank.data_ptr() == handle.state.bank[:, layer.offset:].data_ptr()
               for layer in handle.layers.values())
