"""Where (IA)^3 vectors go: one table of defaults per architecture family, and explicit specs.

A family is picked from ``config.model_type`` (T5 by whether its FFN is gated); an unsupported
architecture is a UserError that shows how to pass module names with an :class:`Ia3Spec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ia3app.errors import UserError


@dataclass(frozen=True)
class Ia3Spec:
    """Where the vectors go, as regular expressions matched (fullmatch) against module paths.

    output_modules: scale the output of these linear layers (k, v; T5 v1.1's gated ``wi_1``).
    input_modules: scale the input of these (the FFN down projection: ``wo``, ``fc2``, ...).
    fused_kv_modules: fused q|k|v projections (GPT-2 ``c_attn``); only the k and v thirds of
        the output are scaled, never the queries.
    """

    output_modules: str = ""
    input_modules: str = ""
    fused_kv_modules: str = ""

    def __post_init__(self) -> None:
        problems = []
        for field in ("output_modules", "input_modules", "fused_kv_modules"):
            pattern = getattr(self, field)
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"{field}={pattern!r} is not a valid regular expression ({exc})")
        if not (self.output_modules or self.input_modules or self.fused_kv_modules):
            problems.append("the spec names no modules")
        if problems:
            raise UserError("invalid (IA)^3 module spec: " + "; ".join(problems))

    def position_of(self, name: str) -> str | None:
        """'output', 'input', 'fused_kv' or None for a module path."""
        for position, pattern in (
            ("fused_kv", self.fused_kv_modules),
            ("output", self.output_modules),
            ("input", self.input_modules),
        ):
            if pattern and re.fullmatch(pattern, name):
                return position
        return None


# Per-architecture defaults, keyed by family. A family is picked from config.model_type.
_T5_ATTN_KV = r"(.*\.)?(SelfAttention|EncDecAttention)\.(k|v)"
SPECS: dict[str, Ia3Spec] = {
    # T0 / T5 v1.1 / Flan-T5 / mT5: gated FFN wo(gelu(wi_0 x) * wi_1 x). The released T-Few
    # vectors scale the output of wi_1, which equals scaling the input of wo.
    "t5-gated": Ia3Spec(output_modules=rf"{_T5_ATTN_KV}|(.*\.)?DenseReluDense\.wi_1"),
    # Original T5 (v1.0): wo(relu(wi x)); the FFN vector goes on the input of wo.
    "t5": Ia3Spec(output_modules=_T5_ATTN_KV, input_modules=r"(.*\.)?DenseReluDense\.wo"),
    "bart": Ia3Spec(
        output_modules=r"(.*\.)?(self_attn|encoder_attn)\.(k_proj|v_proj)",
        input_modules=r"(.*\.)?fc2",
    ),
    "gpt2": Ia3Spec(fused_kv_modules=r"(.*\.)?attn\.c_attn", input_modules=r"(.*\.)?mlp\.c_proj"),
    "llama": Ia3Spec(
        output_modules=r"(.*\.)?self_attn\.(k_proj|v_proj)",
        input_modules=r"(.*\.)?mlp\.down_proj",
    ),
}

_FAMILY_OF_MODEL_TYPE = {
    "t5": None,  # decided by config.is_gated_act
    "mt5": "t5-gated",
    "umt5": "t5-gated",
    "bart": "bart",
    "mbart": "bart",
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
}


def family_of(config) -> str:
    """The (IA)^3 family of a transformers config, or a UserError naming what is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _FAMILY_OF_MODEL_TYPE:
        supported = ", ".join(sorted(_FAMILY_OF_MODEL_TYPE))
        raise UserError(
            f"no default (IA)^3 placement for model type {model_type!r}; supported: {supported}. "
            "For another architecture pass the modules explicitly, e.g. "
            "Ia3Spec(output_modules=r'.*\\.(k_proj|v_proj)', input_modules=r'.*\\.down_proj')"
        )
    family = _FAMILY_OF_MODEL_TYPE[model_type]
    if family is None:
        family = "t5-gated" if getattr(config, "is_gated_act", False) else "t5"
    return family
