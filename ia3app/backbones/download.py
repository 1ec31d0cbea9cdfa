"""Fetch a hub model before loading it, reporting bytes and speed as progress phase "download".

T0-3B is 11 GB: a job that sits in "load" for many minutes with no sign of life looks hung. The
files go to the usual Hugging Face cache, so the loader that follows finds them there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[dict], None]
WEIGHTS = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*", "spiece*"]
"""What a job needs: configs, safetensors weights, tokenizer files (never pickled .bin weights)."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def needs_download(model: str, revision: str | None = None) -> bool:
    """A hub id whose config is not in the local cache (a local folder or a bundled model never needs one)."""
    from ia3app.backbones.bundled import is_short_name

    if is_short_name(model) or Path(model).expanduser().is_dir():
        return False
    from huggingface_hub import try_to_load_from_cache

    return not isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str)


def reporting_bar(model: str, progress: Progress, every_s: float = 1.0, clock=time.monotonic):
    """A tqdm class for huggingface_hub that turns its byte counts into progress events."""
    from tqdm.auto import tqdm

    state = {"done": 0, "total": 0, "began": clock(), "last": 0.0}

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            self._bytes = kwargs.get("unit") == "B" and str(kwargs.get("desc", "")).startswith("Reconstruct")
            kwargs["disable"] = True  # no terminal bar in a worker
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self._bytes and n:
                state["done"] += int(n)
                state["total"] = max(int(self.total or 0), state["done"])
                now = clock()
                if now - state["last"] >= every_s:
                    state["last"] = now
                    speed = state["done"] / max(now - state["began"], 1e-6)
                    progress({"phase": "download", "message": f"downloading {model}: {human_bytes(state['done'])} "
                              f"of {human_bytes(state['total'])} at {human_bytes(speed)}/s"})
            return super().update(n)

    return Bar


def fetch(model: str, revision: str | None, progress: Progress) -> None:
    """Download what loading `model` needs into the cache, with progress; nothing when it is there."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE or not needs_download(model, revision):
        return  # offline: the loader says in words why the model cannot be found
    progress({"phase": "download", "message": f"downloading {model} from the Hugging Face hub"})
    began = time.monotonic()
    try:
        path = snapshot_download(model, revision=revision, allow_patterns=WEIGHTS,
                                 tqdm_class=reporting_bar(model, progress))
    except OSError as exc:  # no network, unknown repo, gated: the loader's words for each
        from ia3app.backbones.loading import hub_error

        raise hub_error(model, revision, exc) from exc
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    progress({"phase": "download", "message": f"downloaded {model}: {human_bytes(size)} in "
              f"{time.monotonic() - began:.0f} s"})
