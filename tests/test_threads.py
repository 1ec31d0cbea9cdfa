"""The CPU thread policy (ia3app.backbones.threads): its defaults, its settings and their errors."""

import pytest
import torch

from ia3app.backbones.threads import ENV, cpu_threads, default_threads, use_threads
from ia3app.errors import UserError
from ia3app.serving.engine import ServingConfig


def test_defaults_leave_a_core_for_the_rest_and_serve_with_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads("train", cores=2) == 1  # measured: 1 thread beat 2 on this 2-core machine
    assert default_threads("train", cores=1) == 1
    assert default_threads("train", cores=16) == 15
    assert default_threads("serve", cores=16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a scheduler's (Ray's) sizing of this process wins
    assert default_threads("train", cores=16) == 2


def test_settings_are_read_and_checked(monkeypatch):
    monkeypatch.setenv(ENV["train"], "3")
    monkeypatch.setenv(ENV["serve"], "2")
    assert cpu_threads("train") == 3
    assert ServingConfig().threads == 2  # 0 = the setting
    assert ServingConfig(threads=1).threads == 1
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(ENV["serve"], bad)
        with pytest.raises(UserError, match="IA3APP_SERVE_THREADS must be a whole number"):
            ServingConfig()
    with pytest.raises(UserError, match="threads must be >= 1"):
        ServingConfig(threads=-2)


def test_use_threads_sets_this_threads_torch_count(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv(ENV["train"], "1")
        assert use_threads("train") == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
