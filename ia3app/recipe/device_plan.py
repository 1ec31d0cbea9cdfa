"""How a training run uses the device: compiled blocks, activation checkpointing, micro-batches.

- **Regional compilation.** ``torch.compile`` is applied to each transformer block (every
  element of the model's repeated ``ModuleList``s: T5's encoder and decoder blocks), not to the
  whole model. All blocks of one class run the same code, so dynamo compiles it once per
  distinct block flavour (first block with relative-position bias, the others; encoder,
  decoder) and reuses it for every block: compile time does not grow with depth. The blocks are
  compiled shape-general from the first step (``dynamic=True``: batch size and widths symbolic),
  so a new width never recompiles; widths are still rounded up to buckets (:data:`INPUT_BUCKET`,
  :data:`TARGET_BUCKET`) so the kernels' shapes repeat. CUDA graphs are not used (inductor's
  default mode). Evaluation runs the blocks eager (:func:`eager_blocks`): a merged model and
  no-grad mode would each be a new compile of every block flavour, for a few forward passes.
- **Compile-cache limits.** Every new compile of a block's code is one entry of its dynamo cache
  (at most :data:`RECOMPILE_LIMIT`); past it, dynamo silently runs that block eager. A long-lived
  worker must not slow down unseen: :data:`COMPILE_WATCH` counts each limit hit and logs a warning
  that says so, and every run reports its new compiles and limit hits (``compile_stats``).
  The compiled kernels are kept in a persistent cache (``TORCHINDUCTOR_CACHE_DIR``; the worker
  points it under its data dir), so a later process compiling the same blocks mostly loads them.
  A model is compiled once: a worker that keeps the loaded model between jobs of the same
  model (jobs/worker.py) reuses it warm.
- **Activation checkpointing** (non-reentrant, so the vectors inside the frozen blocks still get
  gradients although no block input requires grad): 'on', 'off', or 'auto' = only when the
  batch's activations would not fit the run's GPU memory budget.
- **The memory budget** (:func:`gpu_budget_bytes`): ``IA3APP_GPU_MEMORY_BUDGET_GB`` (the whole
  run: weights, vectors, optimizer state and activations), else the GPU's memory (within this
  process's memory fraction, if one is set). The plan fits :data:`BUDGET_FILL` of the budget less what
  the process already holds (the weights), and never more than the memory free on the device.
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
from ia3app.errors import UserError

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
RECOMPILE_LIMIT = 64
"""Dynamo cache entries per compiled code object (each block flavour × guard set is one)."""
BUDGET_ENV = "IA3APP_GPU_MEMORY_BUDGET_GB"
"""Environment variable: GPU memory (GB, 1e9 bytes) a training run may use in all, weights included."""
BUDGET_FILL = 0.9
"""Plan the run's peak into this fraction of the budget (the caching allocator fragments)."""


@dataclass
class Setup:
    """What prepare_for_training decided for this run."""

    compiled: bool
    checkpointing: bool
    grad_accumulation: int
    bucket: tuple[int, int]
    estimate_gb: float | None = None
    """Estimated activation memory of one micro-batch as run (GPU only)."""
    room_gb: float | None = None
    """Memory planned for activations: the budget's usable part less what the process held (GPU only)."""


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


class CompileWatch(logging.Handler):
    """Dynamo's "hit config.recompile_limit" warnings, counted and said in ia3app's words.

    Past the limit dynamo runs the frame eager without failing: this is the only place it shows.
    """

    MARK = "torch._dynamo hit config."

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.limit_hits = 0
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            logging.getLogger("torch._dynamo.convert_frame").addHandler(self)
            self.installed = True

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.MARK):
            self.limit_hits += 1
            log.warning("compiled blocks hit dynamo's cache limit (%s): from now on the shapes or modes that "
                        "do not match a cached compile run EAGER (slower) in this process; restart the worker "
                        "to compile afresh (TORCH_LOGS=recompiles says why they recompiled)",
                        message.splitlines()[0][len("torch._dynamo hit "):])


COMPILE_WATCH = CompileWatch()


def compile_stats() -> dict:
    """Process-wide: graphs dynamo compiled so far, and cache-limit hits (blocks fallen back to eager)."""
    from torch._dynamo.utils import counters

    return {"graphs": counters["stats"]["unique_graphs"], "cache_limit_hits": COMPILE_WATCH.limit_hits}


def compile_blocks(model: nn.Module, backend: str = "inductor") -> int:
    """Compile each transformer block in place (once per model and backend); returns how many blocks."""
    if getattr(model, "_ia3_compiled_blocks", None) and getattr(model, "_ia3_compile_backend", None) == backend:
        return model._ia3_compiled_blocks
    import torch._dynamo

    blocks = repeated_blocks(model)
    if not blocks:
        raise RuntimeError(f"{type(model).__name__} has no repeated blocks to compile")
    # Each (block flavour × guard set) is one cache entry of the same code object.
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    # No "duck shaping": dims equal on the first call (a batch of 4 and 4 heads of the position bias; a
    # width of 32 and 32 heads) would share one symbol, a constant then pins it, and the next batch
    # size or width recompiles. Process-wide; only these blocks are compiled here.
    import torch.fx.experimental._config as fx_config

    fx_config.use_duck_shape = False
    COMPILE_WATCH.install()
    for block in blocks:
        # dynamic=True: symbolic batch size and widths from the first compile, so a second width
        # never compiles again (dynamic=None compiled static first, then once more shape-general).
        block.compile(backend=backend, dynamic=True)
    model._ia3_compiled_blocks, model._ia3_compile_backend = len(blocks), backend
    return len(blocks)


def eager_blocks():
    """Within this block compiled blocks run eager, their compiled code kept for the next training run
    (evaluation: a merged model under no_grad would otherwise compile every block flavour again)."""
    return torch.compiler.set_stance("force_eager")


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


def _shape(config) -> tuple[int, int, int, int, int]:
    """(width, FFN width, heads, encoder/stack layers, decoder layers) of a T5-style or decoder-only config."""
    d = getattr(config, "d_model", None) or config.hidden_size
    ff = getattr(config, "d_ff", None) or getattr(config, "intermediate_size", None) or 4 * d
    heads = getattr(config, "num_heads", None) or getattr(config, "num_attention_heads", 8)
    layers = getattr(config, "num_layers", None) or getattr(config, "num_hidden_layers", 12)
    if not getattr(config, "is_encoder_decoder", True):
        return d, ff, heads, layers, 0
    return d, ff, heads, layers, getattr(config, "num_decoder_layers", None) or layers


def activation_bytes(config, examples: int, input_tokens: int, target_tokens: int, choices: int,
                     checkpointing: bool, dtype_bytes: int = 2) -> float:
    """What a training forward keeps for backward, in bytes (an estimate).

    Per token and block: ~12 d_model-wide tensors (norms, q, k, v, attention output, residuals),
    4 d_ff-wide ones (both FFN branches, GELU, product) and 3 attention-score rows per head.
    With checkpointing, only each block's input stays, plus one block's worth being recomputed.
    The fp32 log-softmax over the vocabulary adds rows × targets × vocab × 8 bytes. Block
    activations are scaled by ACTIVATION_CALIBRATION, fitted to the one measured peak.
    A decoder-only model is one stack over each example's prompt and its choices' tokens (the
    prompt read once, scoring.py's shared prefix).
    """
    d, ff, heads, enc_layers, dec_layers = _shape(config)
    rows = examples * choices
    per_token = lambda keys: dtype_bytes * (12 * d + 4 * ff + 3 * heads * keys)  # noqa: E731
    logits = rows * target_tokens * config.vocab_size * 8
    if not dec_layers:  # decoder-only
        width = input_tokens + choices * target_tokens
        tokens = examples * width
        block = ACTIVATION_CALIBRATION * tokens * per_token(width)
        if checkpointing:
            return dtype_bytes * d * tokens * enc_layers + block + logits
        return block * enc_layers + logits
    enc_tokens = examples * input_tokens
    dec_tokens = rows * target_tokens
    enc_block = ACTIVATION_CALIBRATION * enc_tokens * per_token(input_tokens)
    dec_block = ACTIVATION_CALIBRATION * dec_tokens * (per_token(target_tokens) + dtype_bytes * 3 * heads * input_tokens)
    cross_states = rows * input_tokens * d * dtype_bytes * 2  # encoder states repeated per choice row
    if checkpointing:
        kept = dtype_bytes * d * (enc_tokens * enc_layers + dec_tokens * dec_layers)
        return kept + max(enc_block, dec_block) + cross_states + logits
    return enc_block * enc_layers + dec_block * dec_layers + cross_states + logits


def gpu_budget_bytes(device) -> float:
    """The run's GPU memory budget: IA3APP_GPU_MEMORY_BUDGET_GB, else the device's memory (within
    this process's memory fraction, if one is set: a GPU shared by workers)."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value > 0:
            raise UserError(f"{BUDGET_ENV} must be a positive number of GB (got {raw!r})")
        return value * 1e9
    total = torch.cuda.get_device_properties(device).total_memory
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    return total * (getter(device) if getter is not None else 1.0)


def plan_memory(config, recipe: RecipeConfig, *, budget_bytes: float, held_bytes: float, free_bytes: float,
                input_tokens: int, target_tokens: int, choices: int,
                dtype_bytes: int) -> tuple[bool, int, float, float]:
    """(checkpointing, grad_accumulation, estimate_gb, room_gb): the arithmetic of choose_memory.

    room = BUDGET_FILL × budget − held (what the process holds already: the weights), at most the
    free device memory. Fewest micro-batches first; within each, no checkpointing first.
    """
    room = min(BUDGET_FILL * budget_bytes - held_bytes, free_bytes)
    fixed_acc = recipe.grad_accumulation or None
    divisors = [a for a in range(1, recipe.batch_size + 1) if recipe.batch_size % a == 0]
    options = [fixed_acc] if fixed_acc else divisors
    ckpt_options = {"on": [True], "off": [False], "auto": [False, True]}[recipe.activation_checkpointing]

    def need(ckpt: bool, acc: int) -> float:
        return activation_bytes(config, recipe.batch_size // acc, input_tokens, target_tokens, choices,
                                ckpt, dtype_bytes)

    for acc in options:
        for ckpt in ckpt_options:
            if need(ckpt, acc) <= room:
                return ckpt, acc, need(ckpt, acc) / 2**30, room / 2**30
    ckpt, acc = ckpt_options[-1], options[-1]  # nothing fits by the estimate: the leanest; let it try
    log.warning("the batch may not fit in %.1f GiB of the GPU memory budget (%.1f GB, %.1f GiB held) even with "
                "checkpointing and %d micro-batches; trying anyway", room / 2**30, budget_bytes / 1e9,
                held_bytes / 2**30, acc)
    return ckpt, acc, need(ckpt, acc) / 2**30, room / 2**30


def choose_memory(model: nn.Module, recipe: RecipeConfig, device, *, input_tokens: int, target_tokens: int,
                  choices: int) -> tuple[bool, int, float | None, float | None]:
    """(checkpointing, grad_accumulation, estimate_gb, room_gb) for this run on this device."""
    device = torch.device(device)
    if device.type != "cuda":
        return recipe.activation_checkpointing == "on", recipe.grad_accumulation or 1, None, None
    dtype_bytes = 2 if next(model.parameters()).dtype in (torch.bfloat16, torch.float16) else 4
    free, _ = torch.cuda.mem_get_info(device)
    return plan_memory(model.config, recipe, budget_bytes=gpu_budget_bytes(device),
                       held_bytes=torch.cuda.memory_allocated(device), free_bytes=free,
                       input_tokens=input_tokens, target_tokens=target_tokens, choices=choices,
                       dtype_bytes=dtype_bytes)


def prepare_for_training(model: nn.Module, recipe: RecipeConfig, device, cache, *, compiled: bool,
                         cache_dir: Path | str | None = None) -> Setup:
    """Decide and apply checkpointing, micro-batching and compilation for this run.

    `cache` is the run's TokenCache (its longest rows size the memory estimate).
    """
    choices = max(len(t.choice_ids) for t in cache.tokenized)
    ckpt, acc, estimate, room = choose_memory(model, recipe, device, input_tokens=cache.max_input,
                                              target_tokens=cache.max_target, choices=choices)
    set_checkpointing(model, ckpt)
    if compiled:
        use_compile_cache(cache_dir)
        compile_blocks(model, backend=os.environ.get(BACKEND_ENV, "inductor"))
    else:
        uncompile_blocks(model)
    setup = Setup(compiled, ckpt, acc, buckets(compiled), estimate, room)
    log.info("training setup: %s", setup)
    return setup
