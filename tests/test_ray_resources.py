"""What a job asks Ray for, from its model's weight files (no Ray runtime needed)."""

import pytest

from ia3app.errors import UserError
from jobs.ray_resources import Resources, fits, plan, weight_bytes


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 3_000_000)  # "3 MB of weights"
    (folder / "config.json").write_text("{}")
    return folder


def test_weights_are_read_from_a_local_folder_or_the_hub_cache(model, tmp_path, monkeypatch):
    assert weight_bytes(str(model)) == 3_000_000
    snap = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (tmp_path / "blob").write_bytes(b"\0" * 1234)
    (snap / "model.safetensors").symlink_to(tmp_path / "blob")  # the hub cache links into blobs/
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weight_bytes("org/name") == 1234 and weight_bytes("org/absent") is None


def test_cpu_cluster_gpu_cluster_and_gpu_shares(model):
    cpu = plan(str(model), {"CPU": 8})
    assert (cpu.num_cpus, cpu.num_gpus, cpu.device) == (1.0, 0, "cpu") and cpu.memory == 6_000_000 + 500_000_000
    whole = plan(str(model), {"CPU": 8, "GPU": 2})
    assert whole.num_gpus == 1 and whole.device is None
    share = plan(str(model), {"CPU": 8, "GPU": 2}, gpu_memory_gb=40)
    assert share.num_gpus == 0.05 and abs(share.need_gb - 1.006) < 1e-9  # 1 GB + 2 x 3 MB: the smallest share
    half = plan(str(model), {"GPU": 1}, gpu_memory_gb=2.0)
    assert half.num_gpus == 0.55  # 1.006 / 2 rounded up to a 0.05 step
    unknown = plan("org/not-cached", {"GPU": 1}, gpu_memory_gb=80)
    assert unknown.need_gb == 8.0 and unknown.num_gpus == 0.1


def test_a_model_bigger_than_a_gpu_is_refused_with_the_numbers(model):
    with pytest.raises(UserError, match=r"needs about 1.0 GB .* have 0.5 GB"):
        plan(str(model), {"GPU": 4}, gpu_memory_gb=0.5)


def test_fits_compares_with_what_is_free():
    job = Resources(1, 0.5, 1000, None, 1.0)
    assert fits(job, {"CPU": 1, "GPU": 0.5, "memory": 1000})
    assert not fits(job, {"CPU": 1, "GPU": 0.25, "memory": 1000}) and not fits(job, {"CPU": 0.5, "GPU": 1})
