"""Loading a backbone: a hub id or a local folder, through ``from_pretrained`` only.

One function, :func:`load_model`, used by the CLI, the job worker and the tests alike (tests
load tiny models saved with ``save_pretrained`` through exactly this path). Remote code is
never executed (``trust_remote_code=False``, passed explicitly). Every way loading can fail
because of the user's choice becomes one :class:`~ia3app.errors.UserError` that says what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from ia3app.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclass
class LoadedModel:
    """A backbone ready for scoring (eval mode) and for (IA)^3 injection."""

    model: Any
    tokenizer: Any
    is_encoder_decoder: bool
    name: str
    revision: str | None
    device: str
    num_parameters: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the base weights are stored in."""
        return next(self.model.parameters()).dtype


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported(device) -> bool:
    """A CUDA device with native bf16 (Ampere or newer)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def weights_dtype(precision: str | None, device) -> torch.dtype:
    """The dtype the frozen base weights are stored in, for a recipe precision on a device.

    'auto' (or None): bf16 on GPUs that support it — the base is frozen, so bf16 storage gives
    the same matmul inputs bf16 autocast would make from fp32 copies, at half the memory and
    without re-casting every weight at every forward — and fp32 elsewhere (CPU). 'bf16' / 'fp32'
    force it. The (IA)^3 vectors are created in fp32 whatever the weights are.
    """
    if precision in (None, "auto"):
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    if precision in _DTYPES:
        return _DTYPES[precision]
    raise UserError(f"unknown precision {precision!r}; use one of: auto, bf16, fp32")


def allow_tf32(device) -> None:
    """On CUDA, let fp32 matrix products (what runs outside bf16) use TF32 tensor cores."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise UserError(f"unknown dtype {dtype!r}; use one of: fp32, bf16, fp16")


def _looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id: exists, or starts like a path, or has 2+ slashes."""
    if Path(name).expanduser().exists():
        return True
    return name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name or not _HUB_ID.match(name)


def hub_error(name: str, revision: str | None, exc: OSError) -> UserError:
    """Translate transformers' OSError about a hub id into one actionable message."""
    text = str(exc)
    if "couldn't connect" in text or "offline" in text.lower() or "connection error" in text.lower():
        return UserError(
            f"could not fetch {name!r} from the Hugging Face hub (offline or no network); "
            "download it elsewhere and pass a local path, or pick the tiny demo model"
        )
    if "not a valid git identifier" in text:
        return UserError(f"revision {revision!r} does not exist for {name!r}; check the model page for its branches and tags")
    if "gated" in text:
        return UserError(f"{name!r} is a gated repository; request access on its hub page and log in with `hf auth login`")
    if "is not a local folder" in text:
        return UserError(f"model {name!r} was not found: it is neither a local folder nor a repository on the Hugging Face hub")
    if "does not appear to have" in text:
        return UserError(f"{name!r} has no model files transformers can load ({text.splitlines()[0]})")
    return UserError(f"could not load model {name!r}: {text.splitlines()[0] if text else type(exc).__name__}")


def load_config(name_or_path: str, revision: str | None = None):
    """The model's config, or a UserError (missing folder, unreachable hub, unknown architecture).
    A bundled model's short name (ia3app.backbones.bundled) is its converted folder (converted first if needed)."""
    from ia3app.backbones.bundled import resolve

    name_or_path = resolve(str(name_or_path))
    if _looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise UserError(f"model folder {name_or_path!r} does not exist; check the path, or pick the tiny demo model")
        if not (path / "config.json").is_file():
            raise UserError(
                f"model folder {name_or_path!r} has no config.json; point to a folder written by save_pretrained"
            )
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise hub_error(name_or_path, revision, exc) from exc
    except ValueError as exc:  # unknown model_type, or one needing remote code
        raise UserError(
            f"unsupported architecture in {name_or_path!r}: {str(exc).splitlines()[0]}; "
            "use a T5/T0, BART, GPT-2 or Llama-family model"
        ) from exc


def load_model(
    name_or_path: str,
    revision: str | None = None,
    device: str | None = None,
    dtype=None,
    *,
    precision: str | None = None,
) -> LoadedModel:
    """Load model and tokenizer (eval mode) onto `device` (default: cuda if available).

    The one loading path for training, evaluation and serving. Weights are stored in `dtype`
    when given (fp32, bf16, fp16), else in :func:`weights_dtype` of `precision` (None/'auto':
    bf16 on GPUs that support it, fp32 on CPU). In bf16 every floating weight is bf16,
    including the T5 FFN output projections transformers would keep in fp32 (``wo``: kept so for
    fp16 overflow, which bf16's range does not have). TF32 matmuls are allowed on CUDA.

    Encoder-decoder configs load as AutoModelForSeq2SeqLM, others as AutoModelForCausalLM.
    Decoder-only tokenizers get pad = eos when they have no pad token; scoring pads on the
    right and builds its own masks, so padding_side is set to 'right'.

    A bundled model's short name (``smollm2-135m``) loads its converted folder, converting it once
    first (ia3app.backbones.bundled); ``LoadedModel.name`` keeps the short name.
    """
    from ia3app.backbones.bundled import resolve

    given = str(name_or_path)
    name_or_path = resolve(given)
    config = load_config(name_or_path, revision)
    is_enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if is_enc_dec else AutoModelForCausalLM
    device = device or default_device()
    torch_dtype = _resolve_dtype(dtype) if dtype is not None else weights_dtype(precision, device)
    try:
        model = auto.from_pretrained(name_or_path, revision=revision, dtype=torch_dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise hub_error(name_or_path, revision, exc) from exc
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "trust_remote_code" in str(exc):
            kind = "sequence-to-sequence" if is_enc_dec else "causal language"
            raise UserError(
                f"{name_or_path!r} ({getattr(config, 'model_type', '?')}) is not a {kind} model transformers "
                "can load without remote code; use a T5/T0, BART, GPT-2 or Llama-family model"
            ) from exc
        raise
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of {name_or_path!r} has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    if not is_enc_dec:
        tokenizer.padding_side = "right"
    if torch_dtype == torch.bfloat16:
        model.to(torch.bfloat16)  # the modules from_pretrained kept in fp32 (T5's wo) too
    allow_tf32(device)
    model.to(device).eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        is_encoder_decoder=is_enc_dec,
        name=given,
        revision=revision,
        device=str(device),
        num_parameters=sum(p.numel() for p in model.parameters()),
    )
