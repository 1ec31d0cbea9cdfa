"""The T-Few training recipe: only the (IA)^3 vectors train, with the three T-Few losses.

Adafactor (lr 3e-3, scale_parameter=True, relative_step=False, warmup_init=False; for the vectors
the vectorised but identical :class:`~ia3app.recipe.adafactor.VectorAdafactor`), linear warmup over
6 % of the steps then linear decay to 0, gradient clipping at 1.0, bf16 autocast on GPUs that
support it (fp32 on CPU), all from :class:`~ia3app.config.RecipeConfig`. Device placement,
autocast, backward and clipping go through ``accelerate.Accelerator``. Batches are sampled with a
seeded ``torch.Generator``: one shuffle per epoch, batches running across epoch boundaries.

Every rendering of every row is tokenized once, at the start (:class:`~ia3app.recipe.batches.TokenCache`),
and the run's batches are drawn up front; a step reads nothing back from the device: its losses
stay tensors until the progress callback is fed, at most every ``progress_interval_s`` (and at
checkpoints, cancellation and the end), with one read for all steps since the last.

Optional start from pretrained vectors is the caller's job (``handle.load_vectors``): this
trains whatever vectors the handle holds. With a checkpoint_dir, a checkpoint is written every
``recipe.checkpoint_every`` steps and at the end, and a later call resumes from it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers.optimization import Adafactor, get_linear_schedule_with_warmup

from ia3app.recipe.adafactor import VectorAdafactor
from ia3app.recipe.checkpoint import (
    TrainState,
    capture_rng,
    check_compatible,
    has_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from ia3app.config import RecipeConfig
from ia3app.jobtypes import ProgressEvent
from ia3app.errors import Cancelled, UserError
from ia3app.example import Example
from ia3app.recipe.batches import TokenCache, forward
from ia3app.evaluation.scoring import prefix_cache_supported
from ia3app.recipe.losses import tfew_losses
from ia3app.recipe.device_plan import buckets, compile_stats, compile_wanted, prepare_for_training


@dataclass
class TrainResult:
    steps: int
    """Optimizer steps completed in total (including those before a resume)."""
    wall_s: float
    """Seconds spent training in this call."""
    examples_per_s: float
    losses: dict[str, float]
    """The last step's losses: lm, ul, ln, total."""
    history: list[dict] = field(default_factory=list)
    """One progress record per step (see train())."""
    tokens_processed: int = 0
    """Non-pad tokens through the model over all steps (for training FLOPs)."""
    work_tokens: int = 0
    """Padded tokens carried by this call's steps (with wall_s: this machine's step cost, step_cost.fit)."""
    attention_pairs: int = 0
    """Attention token pairs of this call's steps (step_cost.batch_load)."""
    resumed_from_step: int = 0
    setup: dict = field(default_factory=dict)
    """How the run used the device: compiled, checkpointing, grad_accumulation, memory estimate."""


def _compiles_since(before: dict | None) -> dict:
    """A compiled run's new dynamo graphs and cache-limit hits (blocks fallen back to eager), for its setup."""
    if before is None:
        return {}
    now = compile_stats()
    return {"new_graphs": now["graphs"] - before["graphs"],
            "cache_limit_hits": now["cache_limit_hits"] - before["cache_limit_hits"]}


class EpochSampler:
    """Seeded example order: a fresh permutation each epoch; batches may span two epochs."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples = num_examples
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(num_examples, generator=self.generator)
        self.pos = 0

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            if self.pos == self.num_examples:
                self.perm = torch.randperm(self.num_examples, generator=self.generator)
                self.pos = 0
            take = min(size - len(out), self.num_examples - self.pos)
            out += self.perm[self.pos : self.pos + take].tolist()
            self.pos += take
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


def mixed_precision(precision: str, device: torch.device) -> str:
    """accelerate's mixed_precision for a recipe precision on a device ('auto': bf16 where supported)."""
    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(precision: str, device: torch.device) -> Accelerator:
    """An Accelerator for this run. accelerate keeps one process-wide state; a later run in the
    same process (a job worker) may need other settings, so a conflicting state is reset first."""
    kwargs = {"mixed_precision": mixed_precision(precision, device), "cpu": device.type == "cpu"}
    try:
        return Accelerator(**kwargs)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def make_optimizer(params: list, recipe: RecipeConfig, kind: str = "auto") -> torch.optim.Optimizer:
    """Adafactor with the recipe's settings (scale_parameter, no relative step, no warmup init)."""
    if kind not in ("auto", "transformers"):
        raise ValueError(f"optimizer must be 'auto' or 'transformers', not {kind!r}")
    if kind == "auto" and all(p.dim() == 1 and p.dtype == torch.float32 for p in params):
        return VectorAdafactor(params, lr=recipe.lr, scale_parameter=True, weight_decay=recipe.weight_decay)
    return Adafactor(
        params,
        lr=recipe.lr,
        scale_parameter=True,
        relative_step=False,
        warmup_init=False,
        weight_decay=recipe.weight_decay,
    )


def _losses_of(record: dict) -> dict[str, float]:
    return {"lm": record["loss_lm"], "ul": record["loss_ul"], "ln": record["loss_ln"], "total": record["loss"]}


TrainItem = Union[Example, Sequence[Example]]
"""One training row: an Example, or the same row rendered by several templates."""


def _renderings(item: TrainItem) -> Sequence[Example]:
    return (item,) if isinstance(item, Example) else item


def _draw_index(item: TrainItem, generator: torch.Generator) -> int:
    """T-Few samples a random template per example at each step: which rendering of the row.

    Draws from the sampler's generator, so a resumed run draws the same templates.
    """
    if isinstance(item, Example):
        return 0
    return int(torch.randint(len(item), (1,), generator=generator))


def _draw(item: TrainItem, generator: torch.Generator) -> Example:
    """The rendering _draw_index picks."""
    return _renderings(item)[_draw_index(item, generator)]


def _check_examples(examples: Sequence[TrainItem]) -> None:
    if not examples:
        raise UserError("there are no training examples; add labelled rows to the training data")
    if any(len(_renderings(item)) == 0 for item in examples):
        raise UserError("a training row has no rendering; give each row at least one template")
    unlabelled = sum(1 for item in examples if any(e.label is None for e in _renderings(item)))
    if unlabelled:
        raise UserError(f"{unlabelled} of {len(examples)} training examples have no label; every training row needs one")


def train(
    handle,
    tokenizer,
    examples: Sequence[TrainItem],
    recipe: RecipeConfig,
    *,
    progress: Callable[[ProgressEvent], None] | None = None,
    checkpoint_dir: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    is_encoder_decoder: bool | None = None,
    optimizer: str = "auto",
    progress_interval_s: float = 0.25,
    compile_cache_dir: Path | None = None,
    shared_prefix: bool = True,
    common_prefix: bool = True,
) -> TrainResult:
    """Train the handle's (IA)^3 vectors on labelled examples with the T-Few recipe.

    Each item of `examples` is an Example, or a sequence of Examples (the same row rendered by
    several templates): then each time the row is drawn one rendering is picked at random, as
    T-Few samples a random prompt template per example at each step.

    progress(event) is called once per step, in order, with a ProgressEvent (ia3app.jobtypes): phase
    "train", step (1-based), total_steps, the losses, lr, examples_per_s, elapsed_s, eta_s. Events
    are handed over in bursts, at most every `progress_interval_s` seconds (0: after every step,
    which reads the losses back from the device at every step), and always at the end.
    should_stop() is checked before every step; when it returns True, a checkpoint is written
    (if checkpoint_dir) and Cancelled is raised. The model is left in eval mode.
    optimizer: "auto" (VectorAdafactor when every trainable tensor is a 1-D fp32 vector, as
    (IA)^3's are: the same update in a few kernels) or "transformers" (its Adafactor, per tensor).
    compile_cache_dir: where torch.compile keeps compiled kernels between processes (with
    recipe.compile on); see ia3app.recipe.device_plan.
    shared_prefix: decoder-only models read each input once for all its choices (False: once per
    choice, the old layout; same losses, kept for the benchmark). common_prefix: with it, the tokens all
    inputs of a micro-batch start with go through the model once (scoring.common_prefix_length; eager,
    uncheckpointed decoders only; False: each input whole, kept for the benchmark and tests).
    """
    _check_examples(examples)
    model = handle.model
    params = handle.trainable_parameters()
    if not params:
        raise RuntimeError("the handle has no trainable (IA)^3 vectors")
    device = next(model.parameters()).device
    accelerator = make_accelerator(recipe.precision, device)
    model.to(accelerator.device)
    enc_dec = bool(getattr(model.config, "is_encoder_decoder", False)) if is_encoder_decoder is None else is_encoder_decoder

    optimizer = make_optimizer(params, recipe, optimizer)
    scheduler = get_linear_schedule_with_warmup(optimizer, recipe.warmup(), recipe.steps)
    sampler = EpochSampler(len(examples), recipe.seed)
    torch.manual_seed(recipe.seed)  # dropout
    history: list[dict] = []
    tokens = 0
    start = 0
    if has_checkpoint(checkpoint_dir):
        state = load_checkpoint(checkpoint_dir)
        check_compatible(state, recipe.to_dict(), len(examples), checkpoint_dir)
        handle.load_vectors(state.vectors)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        sampler.load_state_dict(state.sampler)
        restore_rng(state)
        history, tokens, start = list(state.history), state.tokens_processed, state.step

    compiled = compile_wanted(recipe, accelerator.device)
    compiles_before = compile_stats() if compiled else None
    cache = TokenCache(examples, tokenizer, max_length=recipe.max_length, enc_dec=enc_dec,
                       device=accelerator.device, bucket=buckets(compiled), shared_prefix=shared_prefix)
    setup = prepare_for_training(model, recipe, accelerator.device, cache, compiled=compiled,
                                 cache_dir=compile_cache_dir)
    micro = recipe.batch_size // setup.grad_accumulation
    # A batch's common input prefix read once: eager blocks only (a cache passed into compiled blocks would be
    # one more guarded input), not checkpointed ones (transformers drops the cache there).
    common_prefix = (common_prefix and shared_prefix and not compiled and not setup.checkpointing
                     and prefix_cache_supported(model))
    plan = cache.plan(sampler, start, recipe.steps, recipe.batch_size, micro, lambda i, g: _draw_index(examples[i], g),
                      common_prefix=common_prefix)

    def checkpoint(step: int) -> None:
        torch_rng, cuda_rng = capture_rng()
        save_checkpoint(
            checkpoint_dir,
            TrainState(
                step=step,
                vectors=handle.vectors(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                sampler=plan.sampler_states[step - plan.first],
                torch_rng=torch_rng,
                cuda_rng=cuda_rng,
                history=history,
                tokens_processed=tokens,
                recipe=recipe.to_dict(),
                num_examples=len(examples),
            ),
        )

    work = pairs = 0  # padded tokens and attention pairs of this run's steps (their time: ia3app.recipe.step_cost)
    began = time.perf_counter()
    pending: list[tuple[int, float, float, torch.Tensor]] = []  # (step, lr, elapsed, losses (4,) on device)
    last_flush = began

    def flush() -> None:
        """Read the pending steps' losses back in one go and hand their records out."""
        nonlocal last_flush
        if not pending:
            return
        values = torch.stack([p[3] for p in pending]).tolist()  # the only device read: (n, 4)
        for (done, lr, elapsed, _), (lm, ul, ln, total) in zip(pending, values):
            event = ProgressEvent.train_step(step=done, total_steps=recipe.steps, first_step=start,
                                             elapsed_s=elapsed, losses={"lm": lm, "ul": ul, "ln": ln, "total": total},
                                             lr=lr, batch_size=recipe.batch_size)
            history.append(event.to_dict())
            if progress is not None:
                progress(event)
        pending.clear()
        last_flush = time.perf_counter()

    model.train()
    try:
        for step in range(start, recipe.steps):
            if should_stop is not None and should_stop():
                flush()
                if checkpoint_dir is not None and step > start:
                    checkpoint(step)
                raise Cancelled(f"training stopped at step {step} of {recipe.steps}")
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            sums = None
            for mb in plan.steps[step - start]:
                batch = cache.batch(plan, mb)
                with accelerator.autocast():
                    out = forward(model, batch, enc_dec, shared_prefix, mb.prefix)
                losses = tfew_losses(
                    out.token_logprobs,
                    out.token_mask,
                    out.choice_index,
                    batch["labels"],
                    unlikelihood=recipe.unlikelihood,
                    length_norm=recipe.length_norm,
                    check=False,  # labels were checked on the host
                )
                share = (mb.rows.stop - mb.rows.start) / recipe.batch_size
                accelerator.backward(losses["total"] * share)
                part = torch.stack([losses[k].detach() for k in ("lm", "ul", "ln", "total")]) * share  # (4,)
                sums = part if sums is None else sums + part
                tokens += mb.tokens
                work += mb.padded
                pairs += mb.pairs
            accelerator.clip_grad_norm_(params, recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()

            done = step + 1
            now = time.perf_counter()
            pending.append((done, lr, now - began, sums))
            due = recipe.checkpoint_every and (done % recipe.checkpoint_every == 0 or done == recipe.steps)
            if done == recipe.steps or (checkpoint_dir is not None and due) or now - last_flush >= progress_interval_s:
                flush()
            if checkpoint_dir is not None and due:
                checkpoint(done)
    finally:
        model.eval()
    flush()

    wall = time.perf_counter() - began
    trained = recipe.steps - start
    last = _losses_of(history[-1]) if history else {}
    return TrainResult(
        steps=recipe.steps,
        wall_s=wall,
        examples_per_s=trained * recipe.batch_size / wall if wall > 0 else 0.0,
        losses=dict(last),
        history=history,
        tokens_processed=tokens,
        work_tokens=work,
        attention_pairs=pairs,
        resumed_from_step=start,
        setup={**asdict(setup), **_compiles_since(compiles_before)},
    )
