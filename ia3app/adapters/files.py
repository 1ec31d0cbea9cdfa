"""Adapters on disk: ``adapter.safetensors`` (the vectors) + ``ia3_config.json`` (where they go).

Only safetensors are ever read: an adapter directory is user input, and a pickle (``.bin``,
``.pt``) can run code when loaded. The JSON records what the vectors were trained on (base
model id and revision, architecture, family, placement, a fingerprint of the config's shapes),
so loading onto a different base is a clear error rather than silent nonsense. Callers add
their own keys (template, choices, recipe, metrics) through ``extra``. :class:`ia3app.adapters.folder_config.AdapterConfig` names
every key of ia3_config.json.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ia3app import __version__
from ia3app.errors import UserError
from ia3app.adapters.folder_config import AdapterConfig
from ia3app.adapters.ia3 import VECTOR_SUFFIX, Ia3Model

FORMAT = "ia3app-adapter"
FORMAT_VERSION = 1
WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "ia3_config.json"
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Config attributes that decide whether vectors fit a model (whichever the family has).
_SHAPE_KEYS = (
    "d_model", "hidden_size", "n_embd", "d_kv", "head_dim",
    "d_ff", "intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim", "n_inner",
    "num_layers", "num_decoder_layers", "encoder_layers", "decoder_layers", "num_hidden_layers", "n_layer",
    "num_heads", "num_attention_heads", "num_key_value_heads", "encoder_attention_heads",
    "decoder_attention_heads", "n_head", "vocab_size", "is_gated_act",
)  # fmt: skip
_RESERVED = {
    "format", "format_version", "ia3app_version", "base_model", "revision", "architecture",
    "model_type", "family", "spec", "modules", "fingerprint", "num_parameters",
}  # fmt: skip


def config_fingerprint(config) -> dict[str, Any]:
    """The shape-deciding fields of a transformers config (those it has), plus model_type."""
    out: dict[str, Any] = {"model_type": getattr(config, "model_type", None)}
    for key in _SHAPE_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (int, bool, str)):
            out[key] = value
    return out


def vectors_to_bytes(vectors: Mapping[str, torch.Tensor]) -> bytes:
    """The exact bytes of ``adapter.safetensors`` for these vectors (fp32, 1-D)."""
    tensors = {k: v.detach().reshape(-1).to(device="cpu", dtype=torch.float32).contiguous() for k, v in vectors.items()}
    return save_safetensors_bytes(tensors, metadata={"format": "pt"})


def describe(handle: Ia3Model, base_model: str, revision: str | None = None) -> AdapterConfig:
    """The ia3_config.json content that identifies a handle's placement and base model."""
    model = handle.model
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ia3app_version": __version__,
        "base_model": base_model,
        "revision": revision,
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "family": handle.family,
        "spec": {
            "output_modules": handle.spec.output_modules,
            "input_modules": handle.spec.input_modules,
            "fused_kv_modules": handle.spec.fused_kv_modules,
        },
        "modules": [
            {"name": name, "position": layer.position, "features": layer.features}
            for name, layer in handle.layers.items()
        ],
        "fingerprint": config_fingerprint(model.config),
        "num_parameters": handle.num_added_parameters(),
    }


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_adapter(
    handle: Ia3Model,
    out_dir: str | Path,
    base_model: str,
    revision: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the active vectors and their description to ``out_dir``; returns the folder.

    ``extra`` keys (e.g. template, choices, recipe, metrics) are stored at the top level of
    ia3_config.json; they must be JSON-serialisable and not clash with the reserved keys.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & _RESERVED)
    if clash:
        raise ValueError(f"extra keys {clash} are reserved by the adapter format")
    config = describe(handle, base_model, revision) | extra
    text = json.dumps(config, indent=2, sort_keys=False, allow_nan=False) + "\n"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / WEIGHTS_NAME, vectors_to_bytes(handle.vectors()))
    atomic_write(out / CONFIG_NAME, text.encode("utf-8"))
    return out


def _adapter_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in UNSAFE_SUFFIXES:
            raise UserError(
                f"{path.name} is a pickle file; only safetensors adapters are loaded, because a pickle "
                f"can run code. Save the vectors as {WEIGHTS_NAME} (safetensors.torch.save_file)."
            )
        if path.name in (WEIGHTS_NAME, CONFIG_NAME):
            return path.parent
        raise UserError(f"{path} is not an adapter; expected a folder with {WEIGHTS_NAME} and {CONFIG_NAME}")
    if not path.is_dir():
        raise UserError(f"adapter folder {path} does not exist")
    if not (path / WEIGHTS_NAME).is_file():
        unsafe = sorted(p.name for p in path.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES)
        if unsafe:
            raise UserError(
                f"{path} holds {', '.join(unsafe)} but no {WEIGHTS_NAME}; only safetensors adapters are "
                "loaded, because pickle files can run code. Convert it to safetensors first."
            )
        if (path / "adapter_model.safetensors").is_file():
            raise UserError(
                f"{path} is a PEFT adapter folder; load it with ia3app.adapters.peft_export.load_peft_vectors "
                f"or use the ia3app folder that holds {WEIGHTS_NAME}"
            )
        raise UserError(f"{path} has no {WEIGHTS_NAME}; is this an ia3app adapter folder?")
    if not (path / CONFIG_NAME).is_file():
        raise UserError(f"{path} has {WEIGHTS_NAME} but no {CONFIG_NAME}, so its base model is unknown")
    return path


def load_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], AdapterConfig]:
    """Read an adapter folder: ({"<module>.ia3": (F,) fp32}, ia3_config dict). Safetensors only."""
    folder = _adapter_dir(path)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{folder / CONFIG_NAME} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{folder / CONFIG_NAME} is not an ia3app adapter description (no format {FORMAT!r})")
    if not isinstance(config.get("format_version"), int) or config["format_version"] > FORMAT_VERSION:
        raise UserError(
            f"{folder} uses adapter format {config.get('format_version')!r}; this ia3app "
            f"({__version__}) reads up to {FORMAT_VERSION}. Upgrade ia3app to load it."
        )
    try:
        vectors = load_safetensors_bytes((folder / WEIGHTS_NAME).read_bytes())
    except SafetensorError as exc:
        raise UserError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({exc})") from exc
    described = {f"{m['name']}.{VECTOR_SUFFIX}": m["features"] for m in config.get("modules", [])}
    actual = {k: v.numel() if v.dim() == 1 else -1 for k, v in vectors.items()}
    if described != actual:
        raise UserError(
            f"{folder}: {WEIGHTS_NAME} and {CONFIG_NAME} disagree on the vectors "
            f"({len(actual)} tensors vs {len(described)} described); the folder is damaged or mixed up"
        )
    return {k: v.to(torch.float32) for k, v in vectors.items()}, config


def fit_problems(handle: Ia3Model, config: AdapterConfig) -> list[str]:
    """Why an adapter described by ``config`` does not fit ``handle`` (empty: it fits)."""
    mine = describe(handle, base_model="")
    problems = []
    keys = ["architecture"]
    if "custom" not in (config.get("family"), mine["family"]):  # a custom spec is judged by its modules
        keys.append("family")
    for key in keys:
        if config.get(key) != mine[key]:
            problems.append(f"{key} is {config.get(key)!r}, this model is {mine[key]!r}")
    theirs_fp, mine_fp = config.get("fingerprint", {}), mine["fingerprint"]
    for key in sorted(set(theirs_fp) | set(mine_fp)):
        if theirs_fp.get(key) != mine_fp.get(key):
            problems.append(f"{key} {theirs_fp.get(key)!r} vs {mine_fp.get(key)!r} here")
    if not problems:
        theirs_mod = [(m["name"], m["position"], m["features"]) for m in config.get("modules", [])]
        mine_mod = [(m["name"], m["position"], m["features"]) for m in mine["modules"]]
        if sorted(theirs_mod) != sorted(mine_mod):
            diff = sorted(set(theirs_mod) ^ set(mine_mod))
            problems.append(f"the (IA)^3 modules differ (e.g. {diff[0][0]})")
    return problems


def apply_adapter(handle: Ia3Model, path: str | Path) -> AdapterConfig:
    """Load an adapter folder into ``handle`` after checking it fits; returns its config.

    A merged handle stays merged: the new vectors are merged from the kept original weights
    (switching adapters never scales already-scaled weights).
    """
    vectors, config = load_adapter(path)
    problems = fit_problems(handle, config)
    if problems:
        raise UserError(
            f"the adapter in {path} was trained for {config.get('base_model')!r} and does not fit "
            f"this model: " + "; ".join(problems)
        )
    handle.load_vectors(vectors)
    return config


def set_abstain_threshold(path: str | Path, threshold: float | None) -> AdapterConfig:
    """Store the abstain threshold in an adapter folder's ia3_config.json (atomically; every other key
    kept): predictions whose top probability is below it come back "unsure". None: never abstain.
    Returns the new config."""
    from ia3app.evaluation.calibration import check_threshold

    try:
        threshold = check_threshold(threshold)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    folder = _adapter_dir(path)
    config_path = folder / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {config_path}: {exc}") from None
    config["abstain_threshold"] = threshold
    atomic_write(config_path, (json.dumps(config, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return config
