"""The CPU thread policy (ia3app.backbones.threads): its defaults, its settings and their errors."""

import os

import pytest
import torch

from ia3app.backbones.threads import ENV, THREADS_FILE, cpu_threads, default_threads, idle_cores, use_threads
from ia3app.errors import UserError
from ia3app.serving.engine import ServingConfig


def test_training_takes_the_idle_cores_and_serving_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # measured (bench_threads): on a quiet 2-core machine 2 threads trained 1.65x faster, under load 1 won
    assert default_threads("train", cores=2, idle=1.9) == 2
    assert default_threads("train", cores=2, idle=1.6) == 2
    assert default_threads("train", cores=2, idle=1.4) == 1
    assert default_threads("train", cores=2, idle=0.0) == 1  # busy: still one
    assert default_threads("train", cores=16, idle=11.7) == 12
    assert default_threads("train", cores=4, idle=5.0) == 4  # never more than the cores
    assert default_threads("serve", cores=16, idle=16.0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a scheduler's (Ray's) sizing of this process wins
    assert default_threads("train", cores=16, idle=16.0) == 2


def test_idle_cores_are_measured_between_none_and_all():
    cores = os.cpu_count() or 1
    assert -0.01 <= idle_cores(cores, sample_s=0.05) <= cores + 0.01


def test_a_job_keeps_the_count_its_first_attempt_chose(monkeypatch, tmp_path):
    """A resume computes with the same thread count as the attempt it resumes (byte-identical sums),
    whatever the machine's load says now; an explicit setting still wins."""
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ENV["train"], "1")
        assert use_threads("train", remember=tmp_path) == 1
        assert (tmp_path / THREADS_FILE).read_text().strip() == "1"
        monkeypatch.delenv(ENV["train"])
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the default would now say 2
        assert use_threads("train", remember=tmp_path) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv(ENV["train"], "2")
        assert use_threads("train", remember=tmp_path) == 2
        monkeypatch.delenv(ENV["train"])
        (tmp_path / THREADS_FILE).write_text("many\n")
        with pytest.raises(ValueError, match="expected a whole number of threads, found 'many'"):
            use_threads("train", remember=tmp_path)
    finally:
        torch.set_num_threads(before)


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
