"""VectorAdafactor computes transformers' Adafactor update (recipe settings), vectorised."""

import pytest
import torch
from transformers.optimization import Adafactor

from ia3app.recipe.adafactor import VectorAdafactor


def run(make_optimizer, steps=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(1 + 0.1 * torch.randn(n, generator=g)) for n in (7, 1, 33, 128, 5)]
    opt = make_optimizer(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 0.5
        opt.step()
    return params, opt


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("scale_parameter", [True, False])
def test_matches_transformers_adafactor(weight_decay, scale_parameter):
    kw = dict(lr=3e-2, weight_decay=weight_decay, scale_parameter=scale_parameter)
    want, _ = run(lambda ps: Adafactor(ps, relative_step=False, warmup_init=False, **kw))
    got, _ = run(lambda ps: VectorAdafactor(ps, **kw))
    for a, b in zip(got, want):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)


def test_state_dict_round_trip_continues_identically():
    straight, _ = run(lambda ps: VectorAdafactor(ps, lr=1e-2), steps=10)
    params, opt = run(lambda ps: VectorAdafactor(ps, lr=1e-2), steps=5)
    state = opt.state_dict()
    fresh = VectorAdafactor(params, lr=1e-2)
    fresh.load_state_dict(state)
    g = torch.Generator().manual_seed(0)
    # replay the generator to the same point as the straight run after 5 steps
    for n in (7, 1, 33, 128, 5):
        torch.randn(n, generator=g)
    for _ in range(5):
        for p in params:
            torch.randn(p.shape, generator=g)
    for _ in range(5):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 0.5
        fresh.step()
    for a, b in zip(params, straight):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)


def test_rejects_matrices():
    with pytest.raises(ValueError):
        VectorAdafactor([torch.nn.Parameter(torch.ones(2, 2))], lr=1e-3)
