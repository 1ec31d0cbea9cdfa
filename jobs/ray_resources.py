"""What one job asks Ray for: CPUs, a GPU (or a share of one) and memory, from its model.

The model's size is read from its weight files without loading it: a local folder's
``*.safetensors`` / ``*.bin``, or the Hugging Face cache's copy of a hub model. Training (IA)^3
keeps the frozen backbone plus activations in memory; the vectors and Adafactor's state are
negligible, so the estimate is ``2 x weight bytes + 1 GB`` (T0-3B's 11.4 GB of float32 weights:
about 24 GB, the GPU the T-Few paper used). With ``gpu_memory_gb`` (the cluster's GPUs' size)
a small model asks for a share of a GPU (several jobs on one card); without it, a whole GPU.
A cluster without GPUs runs every job on CPU. No torch here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ia3app.errors import UserError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OVERHEAD_GB = 1.0
"""CUDA context, tokenizer, workspace: what even a tiny model costs on a GPU."""
GPU_SHARE_STEP = 0.05
"""GPU shares are rounded up to this (Ray accepts fractions of a GPU)."""


@dataclass(frozen=True)
class Resources:
    num_cpus: float
    num_gpus: float
    memory: int
    """Bytes of RAM to reserve on the node (Ray's logical ``memory`` resource)."""
    device: str | None
    """Passed to the recipe: 'cpu' on a CPU-only placement, None (the node's GPU) otherwise."""
    need_gb: float
    """Estimated training memory of the model (GB)."""

    def ray_options(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory}


def weight_bytes(model: str) -> int | None:
    """Bytes of the model's weight files, or None when they are not on this machine."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _folder_weights(path)
    if "/" in model or model.replace("-", "").replace("_", "").isalnum():
        cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface"))
                     .expanduser() / "hub")
        snapshots = cache / ("models--" + model.replace("/", "--")) / "snapshots"
        if snapshots.is_dir():
            sizes = [_folder_weights(s) for s in snapshots.iterdir() if s.is_dir()]
            sizes = [s for s in sizes if s]
            if sizes:
                return max(sizes)
    return None


def _folder_weights(folder: Path) -> int:
    # resolve(): the hub cache's files are symlinks into its blobs/
    return sum(p.resolve().stat().st_size for p in folder.iterdir()
               if p.name.endswith(WEIGHT_SUFFIXES) and p.resolve().is_file())


def plan(model: str, cluster: dict[str, float], *, gpu_memory_gb: float | None = None,
         cpus_per_job: float = 1.0, default_need_gb: float = 8.0) -> Resources:
    """Resources for one job of ``model`` on a cluster whose totals are ``cluster`` (ray.cluster_resources())."""
    size = weight_bytes(model)
    need_gb = OVERHEAD_GB + 2 * size / 1e9 if size else default_need_gb
    ram = int((2 * size if size else default_need_gb * 1e9) + 0.5e9)
    if cluster.get("GPU", 0) < 1:
        return Resources(cpus_per_job, 0, ram, "cpu", need_gb)
    if gpu_memory_gb is None:
        return Resources(cpus_per_job, 1, int(size * 1.2 + 0.5e9) if size else ram, None, need_gb)
    if need_gb > gpu_memory_gb:
        raise UserError(f"{model} needs about {need_gb:.1f} GB of GPU memory to train, and the cluster's GPUs "
                        f"have {gpu_memory_gb:.1f} GB; pick a smaller model")
    share = min(1.0, math.ceil(need_gb / gpu_memory_gb / GPU_SHARE_STEP) * GPU_SHARE_STEP)
    return Resources(cpus_per_job, share, int(size * 1.2 + 0.5e9) if size else ram, None, need_gb)


def fits(resources: Resources, available: dict[str, float]) -> bool:
    """Whether the cluster has this much free right now (a look, not a reservation)."""
    return (available.get("CPU", 0) >= resources.num_cpus and available.get("GPU", 0) >= resources.num_gpus
            and available.get("memory", math.inf) >= resources.memory)
