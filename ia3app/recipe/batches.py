"""Training inputs tokenized once, on the device; each step gathers its rows without a host sync.

:func:`ia3app.evaluation.scoring.choice_log_probs` tokenizes, pads and copies its batch at every call, and
reads token counts back to the host (``int(mask.sum())``); transformers' mask helpers add a
``padding_mask.all()`` read. That is a handful of host synchronisations per micro-batch. For
training, :class:`TokenCache` tokenizes every rendering of every row once, at job start, into
padded id tables that live on the device, and :meth:`TokenCache.plan` draws the whole run's
batches up front (the same draws from the same sampler generator, in the same order, as the
per-step path did) and uploads their row indices in one copy. A step then only slices those
index tables (host-known offsets), gathers ids, builds its 4-D attention masks with
transformers' own helpers (skips disabled, so nothing reads the mask back) and runs the model.
Widths are known on the host from the tokenized lengths; ``bucket`` rounds them up so that
shapes repeat (what a compiled model wants).

The forward mirrors ``scoring._enc_dec`` / ``scoring._dec_only`` (same padding, shift, masks
and log-prob gather); tests check both give the same losses. Decoder-only models read each
input once (``scoring.shared_prefix_log_probs``, gradients through the shared input) unless
``shared_prefix=False`` asks for one row per (example, choice), the input repeated (the
benchmark's baseline). With ``plan(common_prefix=True)`` each micro-batch also knows (on the host)
how many leading tokens all its inputs share, and that common prefix goes through the model once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_outputs import BaseModelOutput

from ia3app.example import Example
from ia3app.recipe.step_cost import padded_load
from ia3app.evaluation.scoring import (ChoiceLogProbs, accepts_logits_to_keep, as_continuation, choice_token_ids,
                                       common_prefix_length, decoder_input_ids, gather_logprobs,
                                       shared_prefix_log_probs)


@dataclass
class Tokenized:
    """One rendering of one row: its input ids and each choice's ids (ending with EOS)."""

    input_ids: list[int]
    choice_ids: list[list[int]]
    label: int


def tokenize(tokenizer, examples: Sequence[Example], max_length: int, enc_dec: bool) -> list[Tokenized]:
    """Token ids exactly as choice_log_probs builds them, for many examples in two tokenizer calls."""
    if enc_dec:
        inputs = tokenizer([e.input for e in examples], truncation=True, max_length=max_length)["input_ids"]
        inputs = [list(i) for i in inputs]
        texts = [c for e in examples for c in e.choices]
        add_special = True
    else:
        inputs = decoder_input_ids(tokenizer, examples, max_length)
        texts = [as_continuation(e.input, c) for e in examples for c in e.choices]
        add_special = False
    flat = choice_token_ids(tokenizer, texts, add_special, max_length) if texts else []
    out, pos = [], 0
    for e, ids in zip(examples, inputs):
        out.append(Tokenized(ids, flat[pos : pos + len(e.choices)], e.label))
        pos += len(e.choices)
    return out


def _round_up(width: int, bucket: int, cap: int) -> int:
    return min(cap, -(-width // bucket) * bucket) if bucket > 1 else width


@dataclass
class MicroBatch:
    """Where one micro-batch's rows sit in the plan's index tables, and its padded widths."""

    rows: slice  # into plan.renderings / plan.labels: the n examples
    choice_rows: slice  # into plan.choice_rows / plan.row_example: the R choice rows
    choice_index: slice  # into plan.choice_index: n * K entries
    k: int
    input_width: int
    target_width: int
    tokens: int  # non-pad tokens through the model (host-known, for FLOPs)
    padded: int = 0  # tokens the forward carries, padding included (what a step's time grows with: step_cost)
    pairs: int = 0  # attention's token pairs (step_cost.batch_load)
    prefix: int = 0  # leading tokens every input shares, read once (decoder-only, shared prefix; 0: none)


@dataclass
class Plan:
    """The batches of steps [first, last): index tables on the device, offsets on the host."""

    first: int
    steps: list[list[MicroBatch]]
    renderings: torch.Tensor  # (sum n,) rendering ids
    labels: torch.Tensor  # (sum n,)
    choice_rows: torch.Tensor  # (sum R,) rows of the choice table
    row_example: torch.Tensor  # (sum R,) example of each row, local to its micro-batch
    choice_index: torch.Tensor  # (sum n*K,) local row of choice k of example i; -1 if absent
    sampler_states: list[dict]  # sampler state after step first + j (j = 0 .. len(steps))


class TokenCache:
    """Every rendering of every training row, tokenized once, as padded id tables on `device`."""

    def __init__(self, items: Sequence, tokenizer, *, max_length: int, enc_dec: bool, device,
                 bucket: tuple[int, int] = (1, 1), shared_prefix: bool = True):
        self.enc_dec, self.device = enc_dec, torch.device(device)
        self.shared_prefix = shared_prefix  # decoder-only: each input through the model once (token counts)
        self.bucket = (max(1, int(bucket[0])), max(1, int(bucket[1])))  # (input, target) widths round up to these
        self.item_renderings: list[list[int]] = []  # item -> rendering ids
        flat: list[Example] = []
        for item in items:
            group = (item,) if isinstance(item, Example) else tuple(item)
            self.item_renderings.append(list(range(len(flat), len(flat) + len(group))))
            flat.extend(group)
        self.tokenized = tokenize(tokenizer, flat, max_length, enc_dec)
        self.input_len = [len(t.input_ids) for t in self.tokenized]
        self.choice_start, choices = [], []
        for t in self.tokenized:
            self.choice_start.append(len(choices))
            choices.extend(t.choice_ids)
        self.choice_len = [len(c) for c in choices]
        pad = tokenizer.pad_token_id
        self.max_input, self.max_target = max(self.input_len), max(self.choice_len)
        ids = torch.full((len(flat), self.max_input), pad, dtype=torch.long)  # (Nr, S_max)
        for i, row in enumerate(t.input_ids for t in self.tokenized):
            if enc_dec:  # right-padded: the first S columns are a batch padded to S
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            else:  # left-padded: the last S columns are a batch left-padded to S
                ids[i, self.max_input - len(row) :] = torch.tensor(row, dtype=torch.long)
        targets = torch.full((len(choices), self.max_target), pad, dtype=torch.long)  # (Rc, T_max)
        for i, row in enumerate(choices):
            targets[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        self.inputs = ids.to(self.device)
        self.input_mask = (torch.arange(self.max_input) < torch.tensor(self.input_len).unsqueeze(1)).long()
        if not enc_dec:
            self.input_mask = self.input_mask.flip(1)
        self.input_mask = self.input_mask.to(self.device)  # (Nr, S_max)
        self.targets = targets.to(self.device)
        self.target_mask = (torch.arange(self.max_target) < torch.tensor(self.choice_len).unsqueeze(1)).long().to(self.device)

    def plan(self, sampler, first: int, last: int, batch_size: int, micro: int, draw: Callable,
             common_prefix: bool = False) -> Plan:
        """Draw steps first..last-1 exactly as the per-step loop did, and upload their indices once.

        draw(item_index, generator) -> rendering position within the item (one draw per row, in
        batch order, after the step's next_batch), so a resumed run continues the same sequence.
        common_prefix (decoder-only, shared prefix): each micro-batch's common input prefix
        (scoring.common_prefix_length) is read once; the caller checks the model can
        (scoring.prefix_cache_supported).
        """
        tables = {k: [] for k in ("renderings", "labels", "choice_rows", "row_example", "choice_index")}
        steps, states = [], [sampler.state_dict()]
        for _ in range(first, last):
            batch = sampler.next_batch(batch_size)
            micros = []
            for begin in range(0, len(batch), micro):
                rend = [self.item_renderings[i][draw(i, sampler.generator)] for i in batch[begin : begin + micro]]
                micros.append(self._micro(rend, tables, common_prefix))
            steps.append(micros)
            states.append(sampler.state_dict())
        dev = {k: torch.tensor(v, dtype=torch.long).to(self.device) for k, v in tables.items()}
        return Plan(first, steps, dev["renderings"], dev["labels"], dev["choice_rows"], dev["row_example"],
                    dev["choice_index"], states)

    def _micro(self, rend: list[int], tables: dict, common_prefix: bool = False) -> MicroBatch:
        k = max(len(self.tokenized[r].choice_ids) for r in rend)
        start_n, start_r, start_c = len(tables["renderings"]), len(tables["choice_rows"]), len(tables["choice_index"])
        local = 0
        for n, r in enumerate(rend):
            t = self.tokenized[r]
            tables["renderings"].append(r)
            tables["labels"].append(t.label)
            for j in range(k):
                if j < len(t.choice_ids):
                    tables["choice_rows"].append(self.choice_start[r] + j)
                    tables["row_example"].append(n)
                    tables["choice_index"].append(local)
                    local += 1
                else:
                    tables["choice_index"].append(-1)
        rows = tables["choice_rows"][start_r:]
        s = max(self.input_len[r] for r in rend)
        t = max(self.choice_len[c] for c in rows)
        tokens = sum(self.choice_len[c] for c in rows)  # decoder (or continuation) tokens
        prefix = 0
        if common_prefix and self.shared_prefix and not self.enc_dec:
            prefix = common_prefix_length([self.tokenized[r].input_ids for r in rend])
        if self.enc_dec or self.shared_prefix:  # each input encoded / read once (a common prefix once per batch)
            tokens += sum(self.input_len[r] for r in rend) - prefix * (len(rend) - 1)
        else:  # each choice row carries its input again
            tokens += sum(self.input_len[r] * len(self.tokenized[r].choice_ids) for r in rend)
        s, t = _round_up(s, self.bucket[0], self.max_input), _round_up(t, self.bucket[1], self.max_target)
        load = padded_load(len(rend), s, len(rows), t, self.enc_dec, k if self.shared_prefix else 0,
                           prefix=prefix)  # padded, as carried
        return MicroBatch(
            slice(start_n, start_n + len(rend)), slice(start_r, start_r + len(rows)),
            slice(start_c, start_c + len(rend) * k), k, s, t, tokens, int(load.tokens), int(load.pairs), prefix,
        )

    def batch(self, plan: Plan, mb: MicroBatch) -> dict[str, torch.Tensor]:
        """The micro-batch's tensors, gathered on the device (no host reads)."""
        rend = plan.renderings[mb.rows]  # (n,)
        rows = plan.choice_rows[mb.choice_rows]  # (R,)
        s, t = mb.input_width, mb.target_width
        cols = slice(0, s) if self.enc_dec else slice(self.max_input - s, self.max_input)
        return {
            "input_ids": self.inputs[rend, cols],  # (n, S)
            "input_mask": self.input_mask[rend, cols],  # (n, S)
            "targets": self.targets[rows, :t],  # (R, T)
            "target_mask": self.target_mask[rows, :t],  # (R, T)
            "row_example": plan.row_example[mb.choice_rows],  # (R,)
            "choice_index": plan.choice_index[mb.choice_index].view(-1, mb.k),  # (n, K)
            "labels": plan.labels[mb.rows],  # (n,)
        }


def _embeds_like(model, rows: int, width: int, device) -> torch.Tensor:
    """An empty (rows, width, 0) tensor in the embeddings' dtype: all the mask helpers read of it."""
    dtype = model.get_input_embeddings().weight.dtype
    return torch.empty((rows, width, 0), dtype=dtype, device=device)


def forward(model, batch: dict[str, torch.Tensor], enc_dec: bool, shared_prefix: bool = True,
            prefix: int = 0) -> ChoiceLogProbs:
    """Per-token log-probs of every choice row of a cached micro-batch (gradients flow); prefix: its
    MicroBatch.prefix (with shared_prefix), the leading input tokens read once for all rows."""
    if enc_dec:
        return _enc_dec(model, batch)
    if shared_prefix:
        b = batch
        mask = b["target_mask"].to(torch.float32)
        logprobs = shared_prefix_log_probs(model, b["input_ids"], b["input_mask"], b["targets"], b["target_mask"],
                                           b["row_example"], b["choice_index"], prefix=prefix)
        return ChoiceLogProbs(logprobs, mask, b["choice_index"], b["row_example"], 0)
    return _dec_only(model, batch)


def _enc_dec(model, b: dict[str, torch.Tensor]) -> ChoiceLogProbs:
    config = model.config
    enc_ids, enc_mask, targets, tmask = b["input_ids"], b["input_mask"], b["targets"], b["target_mask"]
    n, s = enc_ids.shape
    r, t = targets.shape
    device = enc_ids.device
    start = config.decoder_start_token_id
    start = config.pad_token_id if start is None else start
    dec_in = torch.cat([torch.full_like(targets[:, :1], start), targets[:, :-1]], dim=1)  # (R, T) shift right
    row_mask = enc_mask.index_select(0, b["row_example"])  # (R, S)
    # 4-D masks built here with the skip checks off: the 2-D path asks `mask.all()` of the device.
    enc_attn = create_bidirectional_mask(config, _embeds_like(model, n, s, device), enc_mask,
                                         allow_is_bidirectional_skip=False)  # (n, 1, S, S)
    hidden = model.get_encoder()(input_ids=enc_ids, attention_mask=enc_attn).last_hidden_state  # (n, S, D)
    hidden = hidden.index_select(0, b["row_example"])  # (R, S, D)
    dec_embeds = _embeds_like(model, r, t, device)
    self_attn = create_causal_mask(config, dec_embeds, tmask, None, allow_is_causal_skip=False)  # (R, 1, T, T)
    cross_attn = create_bidirectional_mask(config, dec_embeds, row_mask, encoder_hidden_states=hidden,
                                           allow_is_bidirectional_skip=False)  # (R, 1, T, S)
    logits = model(
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
        attention_mask=cross_attn,
        decoder_input_ids=dec_in,
        decoder_attention_mask=self_attn,
        use_cache=False,
    ).logits  # (R, T, V)
    mask = tmask.to(torch.float32)
    return ChoiceLogProbs(gather_logprobs(logits, targets, mask), mask, b["choice_index"], b["row_example"], 0)


def _dec_only(model, b: dict[str, torch.Tensor]) -> ChoiceLogProbs:
    in_ids, in_mask, targets, tmask = b["input_ids"], b["input_mask"], b["targets"], b["target_mask"]
    ids = torch.cat([in_ids.index_select(0, b["row_example"]), targets], dim=1)  # (R, S + T)
    attn = torch.cat([in_mask.index_select(0, b["row_example"]), tmask], dim=1)  # (R, S + T)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)  # (R, S + T): real tokens count from 0
    mask4d = create_causal_mask(model.config, _embeds_like(model, *ids.shape, ids.device), attn, None,
                                position_ids=positions, allow_is_causal_skip=False)
    keep = targets.shape[1] + 1
    extra = {"logits_to_keep": keep} if accepts_logits_to_keep(model) else {}
    logits = model(input_ids=ids, attention_mask=mask4d, position_ids=positions, use_cache=False, **extra).logits
    logits = logits[:, -keep:]  # (R, T + 1, V)
    picked = logits[:, :-1]  # (R, T, V): the logit before each choice token
    mask = tmask.to(torch.float32)
    return ChoiceLogProbs(gather_logprobs(picked, targets, mask), mask, b["choice_index"], b["row_example"], 0)
