"""How a training run uses the device: compiled blocks, activation checkpointing, micro-batches.

- **Regional compilation.** ``torch.compile`` is applied to each transformer block (every
  element of the model's repeated ``ModuleList``s: T5's encoder and decoder blocks), not to the
  whole model. All blocks of one class run the same code, so dynamo compiles it once per
  distinct block flavour (first block with relative-position bias, the others; encoder,
  decoder) and reuses it for every block: compile time does not grow with depth. Widths are
  rounded up to buckets (:data:`INPUT_BUCKET`, :data:`TARGET_BUCKET`) so shapes repeat, and a
  second width makes dynamo recompile once with symbolic widths (automatic dynamic shapes).
  CUDA graphs are not used (inductor's default mode).
  The compiled kernels are kept in a persistent cache (``TORCHINDUCTOR_CACHE_DIR``; the worker
  points it under its data dir), so a later process compiling the same blocks mostly loads them.
  A model is compiled once: a worker that keeps the loaded model between jobs of the same
  model (jobs/worker.py) reuses it warm.
- **Activation checkpointing** (non-reentrant, so the vectors inside the frozen blocks still get
  gradients although no block input requires grad): 'on', 'off', or 'auto' = only when the
  batch's activations would not fit the GPU's free memory.
- **Micro-batches.** grad_accumulation 0 ('auto') keeps the batch whole unless even with
  checkpointing it would not fit; then the smallest divisor of the batch that fits.

Memory estimates (:func:`activation_bytes`) are a per-token, per-block count of what a T5 block
saves for backward, checked against bench/gpu.py's measured peaks (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ia3app.config import RecipeConfig

log = logging.getLogger(__name__)

INPUT_BUCKET = 32
"""Compiled runs pad input widths up to a multiple of this (shapes repeat; ≤ 31 pad tokens)."""
TARGET_BUCKET = 8
"""... and answer-choice widths up to a multiple of this."""
BACKEND_ENV = "IA3APP_COMPILE_BACKEND"
"""Environment variable naming the torch.compile backend (default inductor; tests use aot_eager)."""
ACTIVATION_CALIBRATION = 2.1
"""Measured / counted: bench/gpu.py's eager T0-3B step (batch 8 × 256 tokens × 3 choices, bf16
base) peaked at 21.4 GB on an H100, 15.7 GB of it activations; the per-block count below gives
7.4 GB (it leaves out dropout masks, softmax and autograd intermediates, workspace)."""
HEADROOM = 0.85
"""Plan activations into this fraction of the free GPU memory (the allocator fragments)."""


@dataclass
class Setup:
    """What prepare_for_training decided for this run."""

    compiled: bool
    checkpointing: bool
    grad_accumulation: int
    bucket: tuple[int, int]
    estimate_gb: float | None = None
    """Estimated activation memory of one micro-batch as run (GPU only)."""
    free_gb: float | None = None


def compile_wanted(recipe: RecipeConfig, device) -> bool:
    """'on' / 'off' as said; 'auto' compiles on CUDA only (inductor on a CPU pays minutes for little)."""
    if recipe.compile == "auto":
        return torch.device(device).type == "cuda"
    return recipe.compile == "on"


def buckets(compiled: bool) -> tuple[int, int]:
    return (INPUT_BUCKET, TARGET_BUCKET) if compiled else (1, 1)


def use_compile_cache(cache_dir: Path | str | None) -> None:
    """Keep inductor's compiled kernels (and its FX / autograd graph caches) under cache_dir."""
    if cache_dir is None:
        return
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ.setdefault("TRITON_CACHE_DIR", str(path / "triton"))


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The elements of the outermost ModuleLists made of ≥ 2 modules of one class (the blocks)."""
    lists = [name for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) >= 2 and len({type(x) for x in m}) == 1]
    outer = [n for n in lists if not any(n != o and n.startswith(o + ".") for o in lists)]
    return [block for name in outer for block in model.get_submodule(name)]


def compile_blocks(model: nn.Module, backend: str = "inductor") -> int:
    """Compile each transformer block in place (once per model and backend); returns how many blocks."""
    if getattr(model, "_ia3_compiled_blocks", None) and getattr(model, "_ia3_compile_backend", None) == backend:
        return model._ia3_compiled_blocks
    import torch._dynamo

    blocks = repeated_blocks(model)
    if not blocks:
        raise RuntimeError(f"{type(model).__name__} has no repeated blocks to compile")
    # Each (block flavour × shape bucket) is one cache entry of the same code object.
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))
    for block in blocks:
        # dynamic=None: the first width compiles static; a second width recompiles once with
        # symbolic widths, which then serves every bucket (cold compile time stays ~2 graphs).
        block.compile(backend=backend, dynamic=None)
    model._ia3_compiled_blocks, model._ia3_compile_backend = len(blocks), backend
    return len(blocks)


def uncompile_blocks(model: nn.Module) -> None:
    """Back to eager blocks (a kept model whose next job asks for compile 'off')."""
    if getattr(model, "_ia3_compiled_blocks", None):
        for block in repeated_blocks(model):
            block._compiled_call_impl = None
        model._ia3_compiled_blocks = 0


def set_checkpointing(model: nn.Module, on: bool) -> None:
    """Non-reentrant activation checkpointing of every block, or none."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif model.is_activation_checkpointing:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif model.is_gradient_checkpointing:
        model.gradient_checkpointing_disable()


def activation_bytes(config, examples: int, input_tokens: int, target_tokens: int, choices: int,
                     checkpointing: bool, dtype_bytes: int = 2) -> float:
    """What a T5-style training forward keeps for backward, in bytes (an estimate).

    Per token and block: ~12 d_model-wide tensors (norms, q, k, v, attention output, residuals),
    4 d_ff-wide ones (both FFN branches, GELU, product) and 3 attention-score rows per head.
    With checkpointing, only each block's input stays, plus one block's worth being recomputed.
    The fp32 log-softmax over the vocabulary adds rows × targets × vocab × 8 bytes. Block
    activations are scaled by ACTIVATION_CALIBRATION, fitted to the one measured peak.
    """
    d, ff = config.d_model, getattr(config, "d_ff", 4 * config.d_model)
    heads = getattr(config, "num_heads", 8)
    enc_layers = getattr(config, "num_layers", 12)
    dec_layers = getattr(config, "num_decoder_layers", None) or enc_layers
    enc_tokens = examples * input_tokens
    rows = examples * choices
    dec_tokens = rows * target_tokens
    per_token = lambda keys: dtype_bytes * (12 * d + 4 * ff + 3 * heads * keys)  # noqa: E731
    enc_block = ACTIVATION_CALIBRATION * enc_tokens * per_token(input_tokens)
    dec_block = ACTIVATION_CALIBRATION * dec_tokens * (per_token(target_tokens) + dtype_bytes * 3 * heads * input_tokens)
    cross_states = rows * input_tokens * d * dtype_bytes * 2  # encoder states repeated per choice row
    logits = rows * target_tokens * config.vocab_size * 8
    if checkpointing:
        kept = dtype_bytes * d * (enc_tokens * enc_layers + dec_tokens * dec_layers)
        return kept + max(enc_block, dec_block) + cross_states + logits
    return enc_block * enc_layers + dec_block * dec_layers + cross_states + logits


def usable_gpu_bytes(device) -> float:
    """Free GPU memory, within this process's memory fraction if one is set (a GPU shared by workers)."""
    free, total = torch.cuda.mem_get_info(device)
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    fraction = getter(device) if getter is not None else 1.0
    if fraction < 1.0:
        free = min(free, fraction * total - torch.cuda.memory_reserved(device))
    return max(free, 0.0)


def choose_memory(model: nn.Module, recipe: RecipeConfig, device, *, input_tokens: int, target_tokens: int,
                  choices: int) -> tuple[bool, int, float | None, float | None]:
    """(checkpointing, grad_accumulation, estimate_gb, free_gb) for this run on this device."""
    device = torch.device(device)
    fixed_acc = recipe.grad_accumulation or None
    if device.type != "cuda":
        return recipe.activation_checkpointing == "on", fixed_acc or 1, None, None
    free = usable_gpu_bytes(device) * HEADROOM
    dtype_bytes = 2 if next(model.parameters()).dtype in (torch.bfloat16, torch.float16) else 4
    divisors = [a for a in range(1, recipe.batch_size + 1) if recipe.batch_size % a == 0]
    options = [fixed_acc] if fixed_acc else divisors
    ckpt_options = {"on": [True], "off": [False], "auto": [False, True]}[recipe.activation_checkpointing]

    def need(ckpt: bool, acc: int) -> float:
        return activation_bytes(model.config, recipe.batch_size // acc, input_tokens, target_tokens, choices,
                                ckpt, dtype_bytes)

    for acc in options:  # fewest micro-batches first; within each, no checkpointing first
        for ckpt in ckpt_options:
            if need(ckpt, acc) <= free:
                return ckpt, acc, need(ckpt, acc) / 2**30, free / 2**30
    ckpt, acc = ckpt_options[-1], options[-1]  # nothing fits by the estimate: the leanest; let it try
    log.warning("the batch may not fit in %.1f GiB of free GPU memory even with checkpointing and %d "
                "micro-batches; trying anyway", free / 2**30, acc)
    return ckpt, acc, need(ckpt, acc) / 2**30, free / 2**30


def prepare_for_training(model: nn.Module, recipe: RecipeConfig, device, cache, *, compiled: bool,
                         cache_dir: Path | str | None = None) -> Setup:
    """Decide and apply checkpointing, micro-batching and compilation for this run.

    `cache` is the run's TokenCache (its longest rows size the memory estimate).
    """
    choices = max(len(t.choice_ids) for t in cache.tokenized)
    ckpt, acc, estimate, free = choose_memory(model, recipe, device, input_tokens=cache.max_input,
                                              target_tokens=cache.max_target, choices=choices)
    set_checkpointing(model, ckpt)
    if compiled:
        use_compile_cache(cache_dir)
        compile_blocks(model, backend=os.environ.get(BACKEND_ENV, "inductor"))
    else:
        uncompile_blocks(model)
    setup = Setup(compiled, ckpt, acc, buckets(compiled), estimate, free)
    log.info("training setup: %s", setup)
    return setup
