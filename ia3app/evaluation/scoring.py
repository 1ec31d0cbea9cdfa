"""Rank classification: score every answer choice by its length-normalised log-probability.

One code path computes the per-token log-probabilities of every choice, :func:`choice_log_probs`;
scoring (no gradients) and training (the T-Few losses) both use it.

- Encoder-decoder models encode each input ONCE; the encoder states are then repeated for each
  of its choices (``index_select``) and only the decoder runs per choice. ``reuse_encoder=False``
  re-encodes the input for every choice (the benchmark's baseline; same numbers).
- Decoder-only models score the continuation: input + choice + EOS, the input left-padded (with
  position ids counted from its first real token), the choice right-padded, reading the log-prob
  of each choice token from the position before it; only those positions' logits are computed.
  Each input is read ONCE (``shared_prefix``, :func:`shared_prefix_log_probs`): one row per
  example, [input, choice 1, choice 2, ...], each choice in a slot of the same width, with a 4-D
  attention mask that lets every choice see the input and its own earlier tokens only, and
  position ids that restart after the input for every choice. ``shared_prefix=False`` repeats the
  input once per choice, one row per (example, choice) (the benchmark's baseline; same numbers).
- The rows of a batch often start with the same tokens (a chat template's system block; in-context
  prompts' first demonstrations). That common prefix is read ONCE per batch (``common_prefix``,
  :func:`common_prefix_length`): it runs at batch size 1 into a KV cache, which is expanded to the
  batch, and every row's remaining input and choice slots attend to it, their positions continuing
  from it (gradients flow through the cached keys and values). Not with per-row adapters (the prefix
  would need each row's vectors) nor with ``pool`` (the prefix's states would be missing).

A choice's tokens always end with EOS; the score β(c) is the mean log-prob over those tokens.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutput

from ia3app.example import Example


@dataclass
class Scored:
    """One example's result: β per choice, softmax over β, and the argmax."""

    scores: list[float]
    probs: list[float]
    pred: int
    embedding: list[float] | None = None
    """With ``score_choices(..., embed=True)``: the input's mean-pooled last hidden state (ChoiceLogProbs.pooled)."""


@dataclass
class ChoiceLogProbs:
    """Per-token log-probs of every (example, choice) row of a batch, flattened to R rows."""

    token_logprobs: torch.Tensor  # (R, T) log p(token | input, prefix); 0 at padding
    token_mask: torch.Tensor  # (R, T) 1.0 for the choice's real tokens (EOS included)
    choice_index: torch.Tensor  # (N, K) row of choice k of example n; -1 where n has < K choices
    row_example: torch.Tensor  # (R,) the example each row belongs to
    tokens_processed: int  # non-pad tokens that went through the model (for FLOPs)
    pooled: torch.Tensor | None = None
    """(N, D) with ``pool=True``: each input's last hidden state averaged over its (non-pad) input tokens —
    the encoder's output for encoder-decoder models, the last layer over the prompt for decoder-only ones."""

    def scores(self) -> torch.Tensor:
        """β: mean token log-prob per row, (R,)."""
        return (self.token_logprobs * self.token_mask).sum(-1) / self.token_mask.sum(-1).clamp(min=1)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no end-of-sequence token, which every choice ends with")
    return tokenizer.eos_token_id


def _is_enc_dec(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def choice_token_ids(tokenizer, texts: list[str], add_special: bool, max_length: int) -> list[list[int]]:
    """Token ids of each choice, ending with exactly one EOS, at most max_length long."""
    eos = _eos_id(tokenizer)
    out = []
    for ids in tokenizer(texts, add_special_tokens=add_special)["input_ids"]:
        ids = list(ids)
        if not ids or ids[-1] != eos:
            ids.append(eos)
        out.append(ids[: max_length - 1] + [eos] if len(ids) > max_length else ids)
    return out


def _pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: (ids, mask), both (len(rows), longest)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _layout(examples: Sequence[Example], device) -> tuple[torch.Tensor, torch.Tensor]:
    """row_example (R,) and choice_index (N, K) for examples with possibly different K."""
    k_max = max(len(e.choices) for e in examples)
    choice_index = torch.full((len(examples), k_max), -1, dtype=torch.long)
    row_example = []
    for n, ex in enumerate(examples):
        for k in range(len(ex.choices)):
            choice_index[n, k] = len(row_example)
            row_example.append(n)
    return torch.tensor(row_example, dtype=torch.long, device=device), choice_index.to(device)


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(target) from logits (R, T, V), targets/mask (R, T) → (R, T), 0 at padding."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (R, T, V) in fp32 even under autocast
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (R, T)
    return picked * mask


def _mixed(handle, names):
    """handle.mixed_batch(names) when per-row adapters are asked for, else a no-op context."""
    if names is None:
        return nullcontext()
    return handle.mixed_batch(names)


def choice_log_probs(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    max_length: int = 256,
    adapter_names: Sequence[str | None] | None = None,
    handle=None,
    reuse_encoder: bool = True,
    shared_prefix: bool = True,
    common_prefix: bool = True,
    is_encoder_decoder: bool | None = None,
    pool: bool = False,
) -> ChoiceLogProbs:
    """One forward over a batch of examples and all their choices (gradients flow if enabled).

    adapter_names (one per example, None = base model) needs the Ia3Model `handle`: the names
    are expanded to one per choice row for every forward that runs per choice (a forward that runs
    per example, the encoder or a shared-prefix decoder, takes them as they are). ``pool``: also return each
    input's mean-pooled last hidden state (ChoiceLogProbs.pooled), from the same forward (a decoder-only
    model then reads each input once per choice row, not through the shared prefix). ``common_prefix``
    (decoder-only, with ``shared_prefix``): the tokens every input of the batch starts with go through the
    model once (:func:`common_prefix_length`; not with adapter_names).
    """
    if adapter_names is not None:
        if handle is None:
            raise ValueError("adapter_names needs the Ia3Model handle")
        if len(adapter_names) != len(examples):
            raise ValueError(f"{len(adapter_names)} adapter names for {len(examples)} examples")
    device = next(model.parameters()).device
    enc_dec = _is_enc_dec(model) if is_encoder_decoder is None else is_encoder_decoder
    row_example, choice_index = _layout(examples, device)
    row_names = None if adapter_names is None else [adapter_names[n] for n in row_example.tolist()]
    pad = tokenizer.pad_token_id
    flat_choices = [c for ex in examples for c in ex.choices]
    if enc_dec:
        return _enc_dec(model, tokenizer, examples, flat_choices, max_length, row_example, choice_index,
                        adapter_names, row_names, handle, reuse_encoder, pad, device, pool)
    shared_prefix = shared_prefix and not pool
    common_prefix = common_prefix and shared_prefix and adapter_names is None and prefix_cache_supported(model)
    return _dec_only(model, tokenizer, examples, flat_choices, max_length, row_example, choice_index,
                     adapter_names if shared_prefix else row_names, handle, shared_prefix, pad, device, pool,
                     common_prefix)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, S, D) states averaged over the positions where mask (N, S) is 1, as fp32: (N, D)."""
    weights = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)


def _enc_dec(model, tokenizer, examples, flat_choices, max_length, row_example, choice_index,
             adapter_names, row_names, handle, reuse_encoder, pad, device, pool=False) -> ChoiceLogProbs:
    inputs = tokenizer([e.input for e in examples], truncation=True, max_length=max_length)["input_ids"]
    enc_ids, enc_mask = _pad(inputs, pad, device)  # (N, S)
    targets, tmask = _pad(choice_token_ids(tokenizer, flat_choices, True, max_length), pad, device)  # (R, T)
    start = model.config.decoder_start_token_id
    start = pad if start is None else start
    dec_in = torch.cat([torch.full_like(targets[:, :1], start), targets[:, :-1]], dim=1)  # (R, T) shift right
    row_mask = enc_mask.index_select(0, row_example)  # (R, S)
    pooled = None
    if reuse_encoder or pool:
        with _mixed(handle, adapter_names):
            encoded = model.get_encoder()(input_ids=enc_ids, attention_mask=enc_mask).last_hidden_state  # (N, S, D)
        pooled = _mean_pool(encoded, enc_mask) if pool else None
    if reuse_encoder:
        hidden = encoded.index_select(0, row_example)  # (R, S, D): each input's states, once per choice
        with _mixed(handle, row_names):
            logits = model(
                encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                attention_mask=row_mask,
                decoder_input_ids=dec_in,
                decoder_attention_mask=tmask,
            ).logits  # (R, T, V)
        processed = int(enc_mask.sum()) + int(tmask.sum())
    else:
        with _mixed(handle, row_names):
            logits = model(
                input_ids=enc_ids.index_select(0, row_example),  # (R, S): re-encoded per choice
                attention_mask=row_mask,
                decoder_input_ids=dec_in,
                decoder_attention_mask=tmask,
            ).logits  # (R, T, V)
        processed = int(row_mask.sum()) + int(tmask.sum())
    mask = tmask.to(torch.float32)
    return ChoiceLogProbs(gather_logprobs(logits, targets, mask), mask, choice_index, row_example, processed, pooled)


def as_continuation(text: str, choice: str) -> str:
    """The choice as a continuation of the input: separated by one space unless already spaced."""
    if not text or text[-1].isspace() or choice[:1].isspace():
        return choice
    return " " + choice


def accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def decoder_input_ids(tokenizer, examples, max_length: int) -> list[list[int]]:
    """A decoder-only model's input ids: no closing EOS (the answer continues the text), and the END
    of a long input kept, since it is next to the answer."""
    eos = _eos_id(tokenizer)
    inputs = []
    for ids in tokenizer([e.input for e in examples])["input_ids"]:
        ids = list(ids)
        if len(ids) > 1 and ids[-1] == eos:  # a tokenizer that closes every text (ByT5): continue instead
            ids = ids[:-1]
        inputs.append(ids[-max_length:])
    return inputs


def _dec_only(model, tokenizer, examples, flat_choices, max_length, row_example, choice_index,
              names, handle, shared_prefix, pad, device, pool=False, common_prefix=False) -> ChoiceLogProbs:
    inputs = decoder_input_ids(tokenizer, examples, max_length)
    texts = [as_continuation(examples[n].input, c) for n, c in zip(row_example.tolist(), flat_choices)]
    targets, tmask = _pad(choice_token_ids(tokenizer, texts, False, max_length), pad, device)  # (R, T)
    width = max(len(i) for i in inputs)
    in_ids, _ = _pad([[pad] * (width - len(i)) + i for i in inputs], pad, device)  # (N, S)
    in_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in inputs], device=device)  # (N, S)
    mask = tmask.to(torch.float32)
    if shared_prefix:
        prefix = common_prefix_length(inputs) if common_prefix else 0
        with _mixed(handle, names):
            logprobs = shared_prefix_log_probs(model, in_ids, in_mask, targets, tmask, row_example, choice_index,
                                               prefix=prefix)
        tokens = sum(map(len, inputs)) - prefix * (len(inputs) - 1) + int(tmask.sum())
        return ChoiceLogProbs(logprobs, mask, choice_index, row_example, tokens)
    # Inputs padded on the LEFT, choices on the right: every choice starts at column S, so the
    # logits needed (columns S-1 .. S+T-2: position p predicts token p + 1) are the last T + 1
    # but one, for every row; logits_to_keep spares the (R, L, V) logits of the whole sequence.
    ids = torch.cat([in_ids.index_select(0, row_example), targets], dim=1)  # (R, S + T)
    attn = torch.cat([in_mask.index_select(0, row_example), tmask], dim=1)  # (R, S + T)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)  # (R, S + T): real tokens count from 0
    keep = targets.shape[1] + 1
    extra = {"output_hidden_states": True} if pool else {}
    with _mixed(handle, names):
        if accepts_logits_to_keep(model):
            out = model(input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=keep, **extra)
            logits = out.logits
        else:
            out = model(input_ids=ids, attention_mask=attn, position_ids=positions, **extra)
            logits = out.logits[:, -keep:]
    pooled = None
    if pool:  # the prompt's positions of each example's first choice row (the prompt is the same in every row)
        pooled = _mean_pool(out.hidden_states[-1].index_select(0, choice_index[:, 0])[:, :width], in_mask)
    picked = logits[:, :-1]  # (R, T, V): the logit before each choice token
    return ChoiceLogProbs(gather_logprobs(picked, targets, mask), mask, choice_index, row_example, int(attn.sum()),
                          pooled)


def _slot_mask(prompt: int, slot: int):
    """A mask function (transformers' and_mask_function): a query in a choice slot sees the prompt
    and its own slot only; prompt columns are [0, prompt), slot k is [prompt + k*slot, prompt + (k+1)*slot)."""

    def inner(batch_idx, head_idx, q_idx, kv_idx):
        return (kv_idx < prompt) | ((q_idx >= prompt) & ((q_idx - prompt) // slot == (kv_idx - prompt) // slot))

    return inner


MIN_COMMON_PREFIX = 8
"""Fewest common tokens worth a forward of their own (below this the second call costs more than it saves)."""


def common_prefix_length(inputs: Sequence[Sequence[int]], minimum: int = MIN_COMMON_PREFIX) -> int:
    """How many leading tokens all `inputs` share, leaving each at least one token of its own (the last
    input token predicts the first answer token); 0 when that is below `minimum` or there is one input."""
    if len(inputs) < 2:
        return 0
    limit = min(len(ids) for ids in inputs) - 1
    first = inputs[0]
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in inputs):
        length += 1
    return length if length >= minimum else 0


def prefix_cache_supported(model) -> bool:
    """Whether `model` can continue rows from a cached common prefix: a decoder whose cache is one plain
    full-attention layer per block (sliding-window and hybrid caches drop or reshape keys: not here), and
    no activation checkpointing while training."""
    if _is_enc_dec(model) or "past_key_values" not in inspect.signature(model.forward).parameters:
        return False
    if model.training and any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return False  # checkpointed blocks drop the cache (transformers' GradientCheckpointingLayer)
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def split_prefix(in_ids: torch.Tensor, in_mask: torch.Tensor, prefix: int):
    """Left-padded inputs (N, S) whose real tokens all start with the same `prefix` tokens, split into
    that prefix (1, P) and the rest of every input, left-padded (N, S - P). No host reads: row n's real
    tokens are its last L_n columns, so its rest is columns P.. masked like columns ..S-P."""
    s = in_ids.shape[1]
    start = (in_mask[:1] == 0).sum(-1, keepdim=True)  # (1, 1): row 0's padding
    prefix_ids = in_ids[:1].gather(1, start + torch.arange(prefix, device=in_ids.device))  # (1, P)
    return prefix_ids, in_ids[:, prefix:], in_mask[:, : s - prefix]


def prefix_cache(model, prefix_ids: torch.Tensor, rows: int) -> DynamicCache:
    """The keys and values of one prefix (1, P) through every block, computed once and expanded to `rows`
    rows (views, no copy; gradients flow to whatever scaled them, e.g. the (IA)^3 vectors)."""
    cache = DynamicCache(config=model.config)
    positions = torch.arange(prefix_ids.shape[1], device=prefix_ids.device).unsqueeze(0)
    model.base_model(input_ids=prefix_ids, position_ids=positions, past_key_values=cache, use_cache=True)
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    return cache


def shared_prefix_log_probs(model, in_ids, in_mask, targets, tmask, row_example, choice_index,
                            prefix: int = 0) -> torch.Tensor:
    """Per-token log-probs (R, T) of every choice row, each example's input read once (gradients flow).

    in_ids/in_mask (N, S) left-padded inputs; targets/tmask (R, T) right-padded choices;
    row_example (R,) and choice_index (N, K) as in ChoiceLogProbs, the rows of an example
    consecutive. One row per example goes through the model: [input, K slots of width T]; the
    4-D mask (built by transformers for the model's attention implementation) keeps the slots
    apart, and every slot's positions count on from the input's length, so choice k of example n
    sees exactly what its own row [input, choice k] would. ``prefix`` (0 < P < every input's length,
    :func:`common_prefix_length`): the first P real tokens, the same in every input, go through the model
    once (:func:`prefix_cache`) and the rows continue from their keys/values, positions from P on.
    No host reads (shapes only).
    """
    past = None
    if prefix:
        prefix_ids, in_ids, in_mask = split_prefix(in_ids, in_mask, prefix)
        past = prefix_cache(model, prefix_ids, in_ids.shape[0])
    n, s = in_ids.shape
    r, t = targets.shape
    k = choice_index.shape[1]
    device = in_ids.device
    slot = torch.arange(r, device=device) - choice_index[:, 0].index_select(0, row_example)  # (R,) k of each row
    slot_ids = targets.new_zeros((n, k, t))  # empty slots (examples with fewer choices) stay masked
    slot_ids[row_example, slot] = targets
    slot_mask = tmask.new_zeros((n, k, t))
    slot_mask[row_example, slot] = tmask
    ids = torch.cat([in_ids, slot_ids.view(n, k * t)], dim=1)  # (N, S + K*T)
    attn = torch.cat([in_mask.new_ones((n, prefix)), in_mask, slot_mask.view(n, k * t)], dim=1)  # (N, P + S + K*T)
    prompt_len = prefix + in_mask.sum(-1, keepdim=True)  # (N, 1)
    positions = torch.cat([prefix + (in_mask.cumsum(-1) - 1).clamp(min=0),  # real input tokens count from P
                           prompt_len + torch.arange(t, device=device).repeat(k)], dim=1)  # each slot from S_n
    embeds = torch.empty((n, s + k * t, 0), dtype=model.get_input_embeddings().weight.dtype, device=device)
    # The mask's query and key indices count from the prefix's first token (the cache's length is the offset).
    mask4d = create_causal_mask(model.config, embeds, attn, past, position_ids=positions,
                                and_mask_function=_slot_mask(prefix + s, t), allow_is_causal_skip=False)
    keep = k * t + 1  # columns S-1 .. S+K*T-1; column S-1+c is relative column c
    cache = {"past_key_values": past, "use_cache": True} if past is not None else {"use_cache": False}
    if accepts_logits_to_keep(model):
        logits = model(input_ids=ids, attention_mask=mask4d, position_ids=positions, logits_to_keep=keep,
                       **cache).logits
    else:
        logits = model(input_ids=ids, attention_mask=mask4d, position_ids=positions, **cache).logits[:, -keep:]
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, K*T + 1, V) in fp32 even under autocast
    steps = torch.arange(t, device=device)
    # token 0 of every choice is predicted by the input's last column (relative 0), token j > 0 of
    # slot k by the column before it (relative k*T + j).
    cols = torch.where(steps == 0, 0, slot.unsqueeze(1) * t + steps)  # (R, T)
    picked = logp[row_example.unsqueeze(1), cols, targets]  # (R, T)
    return picked * tmask.to(picked.dtype)


@torch.no_grad()
def score_choices(
    model,
    tokenizer,
    examples: list[Example],
    *,
    batch_size: int = 16,
    max_length: int = 256,
    adapter_names: list[str | None] | None = None,
    handle=None,
    reuse_encoder: bool = True,
    shared_prefix: bool = True,
    common_prefix: bool = True,
    is_encoder_decoder: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
    embed: bool = False,
) -> list[Scored]:
    """Rank classification of `examples` in batches of `batch_size` examples (all their choices).

    Examples are batched in order of input length (less padding) and returned in input order.
    With adapter_names (one per example; None = base model) each row uses its own adapter from
    the handle's bank in one mixed batch. on_batch(rows scored so far) is called after each batch.
    ``embed``: each Scored also carries the input's representation.
    """
    if adapter_names is not None and len(adapter_names) != len(examples):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(examples)} examples")
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input))
    results: list[Scored | None] = [None] * len(examples)
    for begin in range(0, len(order), batch_size):
        idx = order[begin : begin + batch_size]
        batch = [examples[i] for i in idx]
        names = None if adapter_names is None else [adapter_names[i] for i in idx]
        out = choice_log_probs(
            model, tokenizer, batch, max_length=max_length, adapter_names=names, handle=handle,
            reuse_encoder=reuse_encoder, shared_prefix=shared_prefix, common_prefix=common_prefix,
            is_encoder_decoder=is_encoder_decoder, pool=embed,
        )
        pooled = out.pooled.cpu() if out.pooled is not None else None
        beta = out.scores().cpu()  # (R,): one copy to the host per batch
        choice_index = out.choice_index.cpu()  # (N, K)
        for j, i in enumerate(idx):
            rows = choice_index[j]
            scores = beta[rows[rows >= 0]]  # (K,)
            probs = torch.softmax(scores, dim=0)
            results[i] = Scored(scores.tolist(), probs.tolist(), int(scores.argmax()),
                                pooled[j].tolist() if pooled is not None else None)
        if on_batch is not None:
            on_batch(begin + len(idx))
    return results  # type: ignore[return-value]
