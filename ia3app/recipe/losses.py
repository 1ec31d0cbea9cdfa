"""The T-Few losses, L = L_LM + L_UL + L_LN, exactly as docs/TFEW.md states them.

Inputs are the per-token log-probs of every (example, choice) row that
:func:`ia3app.evaluation.scoring.choice_log_probs` computes, so training and scoring share one code path.

- L_LM: cross-entropy of the correct choice's tokens, averaged over all correct-choice tokens
  of the batch (as the reference code's ``F.cross_entropy`` over the flattened batch).
- L_UL: -log(1 - p + 0.01) summed over every token of every incorrect choice, divided by the
  number of such tokens (the reference's ε = 0.01).
- L_LN: -log softmax(β)_y, β(c) = mean token log-prob of choice c (padding excluded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

UL_EPSILON = 0.01


def tfew_losses(
    token_logprobs: torch.Tensor,
    token_mask: torch.Tensor,
    choice_index: torch.Tensor,
    labels: torch.Tensor,
    *,
    unlikelihood: bool = True,
    length_norm: bool = True,
    eps: float = UL_EPSILON,
    check: bool = True,
) -> dict[str, torch.Tensor]:
    """{'lm', 'ul', 'ln', 'total'} scalars; a term switched off is still reported, detached.

    token_logprobs, token_mask: (R, T), one row per (example, choice), mask 1 on real tokens.
    choice_index: (N, K) row of choice k of example n, -1 where example n has fewer choices.
    labels: (N,) index of the correct choice.
    check: verify every label points to an existing choice. That reads a flag back from the
    device (a host sync); training checks its labels once on the host instead and passes False.
    """
    mask = token_mask.to(token_logprobs.dtype)  # (R, T)
    valid = choice_index >= 0  # (N, K)
    correct_rows = choice_index.gather(1, labels.view(-1, 1)).squeeze(1)  # (N,)
    if check and (correct_rows < 0).any():
        raise ValueError("a label points to a choice its example does not have")

    # L_LM: mean over all correct-choice tokens of the batch.
    lm_mask = mask[correct_rows]  # (N, T)
    lm = -(token_logprobs[correct_rows] * lm_mask).sum() / lm_mask.sum()

    # L_UL: tokens of the incorrect choices only.
    is_correct = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)  # (R,)
    is_correct[correct_rows] = True
    ul_mask = mask * (~is_correct).unsqueeze(1).to(mask.dtype)  # (R, T)
    p = token_logprobs.exp()  # (R, T)
    ul = -(torch.log(1 - p + eps) * ul_mask).sum() / ul_mask.sum().clamp(min=1)

    # L_LN: softmax over the K length-normalised scores of each example.
    beta = (token_logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (R,)
    beta_nk = beta[choice_index.clamp(min=0)].masked_fill(~valid, float("-inf"))  # (N, K)
    ln = F.cross_entropy(beta_nk, labels)

    total = lm
    total = total + (ul if unlikelihood else 0.0)
    total = total + (ln if length_norm else 0.0)
    return {
        "lm": lm,
        "ul": ul if unlikelihood else ul.detach(),
        "ln": ln if length_norm else ln.detach(),
        "total": total,
    }
