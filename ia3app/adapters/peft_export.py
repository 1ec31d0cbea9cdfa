"""Export an (IA)^3 adapter as a PEFT IA3 folder that computes *our* function.

``peft.PeftModel.from_pretrained(base, folder)`` loads what this writes (adapter_config.json +
adapter_model.safetensors) and gives the same outputs as our handle. PEFT's model is simpler
than ours in two places, and the export bridges both:

- PEFT scales a module's *output* unless the module is listed in ``feedforward_modules``, in
  which case it scales the *input*. So T5 v1.1's ``wi_1`` (output-scaled, like T-Few) is a
  target but NOT a feedforward module, while ``wo`` / ``fc2`` / ``down_proj`` / GPT-2's
  ``mlp.c_proj`` are feedforward modules.
- PEFT scales the whole output of GPT-2's fused ``c_attn`` (q|k|v); we never scale the queries,
  so the exported vector holds ones over the query third.

Module names are written as full paths (exact matches), and the export checks PEFT's own
matching rules select exactly our modules before writing. This module does not import peft.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ia3app.adapters.files import UNSAFE_SUFFIXES, atomic_write
from ia3app.errors import UserError
from ia3app.adapters.ia3 import VECTOR_SUFFIX, Ia3Model

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PeftModel -> IA3Model -> the transformers model
_SUFFIX = ".ia3_l"


def _task_type(model) -> str | None:
    if getattr(model.config, "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return "CAUSAL_LM"
    return None  # PeftModel without a task head


def _base_module_names(handle: Ia3Model) -> list[str]:
    """Module paths as PEFT will see them in the plain model (our wrappers' insides excluded)."""
    inner = tuple(f"{path}." for path in handle.layers)
    return [name for name, _ in handle.model.named_modules() if name and not name.startswith(inner)]


def _peft_selects(targets: list[str], feedforward: list[str], names: list[str]) -> tuple[set[str], set[str]]:
    """PEFT's matching for list-valued configs (tuners_utils / ia3 model): what it wraps, what it input-scales."""
    wrapped = {n for n in names if any(n == t or n.endswith("." + t) for t in targets)}
    ff = {n for n in wrapped if any(n.endswith(t) for t in feedforward)}
    return wrapped, ff


def peft_tensors(handle: Ia3Model) -> dict[str, torch.Tensor]:
    """{"base_model.model.<path>.ia3_l": tensor} in PEFT's shapes: (out, 1), or (1, in) for feedforward."""
    out = {}
    for path, layer in handle.layers.items():
        vec = layer.ia3.detach().to(device="cpu", dtype=torch.float32)  # (F,)
        if layer.position == "input":
            tensor = vec.view(1, -1)  # (1, in)
        elif layer.position == "output":
            tensor = vec.view(-1, 1)  # (out, 1)
        else:  # fused q|k|v: PEFT scales all of it, so the query third gets ones
            tensor = torch.cat([torch.ones(layer.kv_start), vec]).view(-1, 1)  # (3d, 1)
        out[f"{_PREFIX}{path}{_SUFFIX}"] = tensor.contiguous()
    return out


def peft_config(handle: Ia3Model, base_model: str, revision: str | None = None) -> dict[str, Any]:
    """The adapter_config.json PEFT needs, or a UserError where PEFT cannot express our placement."""
    if not handle.layers:
        raise UserError("the model has no (IA)^3 layers to export")
    kinds = {layer.is_conv1d for layer in handle.layers.values()}
    if len(kinds) > 1:
        raise UserError(
            "cannot export to PEFT: the adapter mixes nn.Linear and Conv1D layers, and PEFT's single "
            "fan_in_fan_out setting describes only one of them"
        )
    targets = list(handle.layers)
    feedforward = [p for p, layer in handle.layers.items() if layer.position == "input"]
    wrapped, ff = _peft_selects(targets, feedforward, _base_module_names(handle))
    if wrapped != set(targets) or ff != set(feedforward):
        odd = sorted((wrapped ^ set(targets)) | (ff ^ set(feedforward)))
        raise UserError(
            f"cannot export to PEFT: its name matching would place vectors differently from ours (e.g. at {odd[0]})"
        )
    return {
        "peft_type": "IA3",
        "task_type": _task_type(handle.model),
        "base_model_name_or_path": base_model,
        "revision": revision,
        "target_modules": targets,
        "feedforward_modules": feedforward,
        "exclude_modules": None,
        "fan_in_fan_out": kinds == {True},  # GPT-2's Conv1D stores weights as [in, out]
        "modules_to_save": None,
        "init_ia3_weights": True,
        "inference_mode": True,
        "auto_mapping": None,
    }


def export_peft(handle: Ia3Model, out_dir: str | Path, base_model: str, revision: str | None = None) -> Path:
    """Write a PEFT IA3 folder for the handle's active vectors; returns the folder."""
    config = peft_config(handle, base_model, revision)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / PEFT_WEIGHTS_NAME, save_safetensors_bytes(peft_tensors(handle), metadata={"format": "pt"}))
    atomic_write(out / PEFT_CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    return out


def load_peft_vectors(path: str | Path, handle: Ia3Model) -> dict[str, torch.Tensor]:
    """Read a PEFT IA3 folder as our vectors for ``handle`` (``handle.load_vectors`` takes them).

    Works for folders this module wrote and for PEFT-trained ones whose placement matches ours;
    a vector that scales GPT-2's queries, or sits on the other side of a module, is refused.
    """
    folder = Path(path)
    if not (folder / PEFT_WEIGHTS_NAME).is_file():
        unsafe = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in UNSAFE_SUFFIXES)
        hint = f" (found {', '.join(unsafe)}: pickle files are never loaded)" if unsafe else ""
        raise UserError(f"{folder} has no {PEFT_WEIGHTS_NAME}{hint}")
    try:
        config = json.loads((folder / PEFT_CONFIG_NAME).read_text(encoding="utf-8"))
        tensors = load_safetensors_bytes((folder / PEFT_WEIGHTS_NAME).read_bytes())
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise UserError(f"{folder} is not a readable PEFT adapter folder ({exc})") from exc
    if config.get("peft_type") != "IA3":
        raise UserError(f"{folder} holds a PEFT {config.get('peft_type')!r} adapter, not IA3")
    feedforward = config.get("feedforward_modules") or []
    vectors, problems = {}, []
    for key, tensor in tensors.items():
        path_ = key.removeprefix(_PREFIX).removesuffix(_SUFFIX)
        layer = handle.layers.get(path_)
        if layer is None:
            problems.append(f"{path_} is not an (IA)^3 module of this model")
            continue
        is_ff = path_ in feedforward or any(path_.endswith(t) for t in feedforward)
        if is_ff != (layer.position == "input"):
            problems.append(f"{path_} scales the {'input' if is_ff else 'output'}; ours scales the {layer.position}")
            continue
        vec = tensor.reshape(-1).to(torch.float32)
        if layer.position == "fused_kv":
            if vec.numel() != layer.kv_start + layer.features or not torch.all(vec[: layer.kv_start] == 1):
                problems.append(f"{path_} scales the queries, which (IA)^3 here never does")
                continue
            vec = vec[layer.kv_start :]
        vectors[f"{path_}.{VECTOR_SUFFIX}"] = vec
    if problems:
        raise UserError(f"the PEFT adapter in {folder} does not fit: " + "; ".join(problems[:3]))
    handle.check_vectors(vectors)
    return vectors
