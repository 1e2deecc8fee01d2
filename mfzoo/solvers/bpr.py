"""LearnBPR (Rendle et al. 2009): bootstrap-sampled SGD on BPR, as one fused update per batch.

The gradient path (`GradientModule` with `BPRLoss`) trains any model with any optimizer. For the
common case, plain MF with SGD, this solver does the same arithmetic without autograd: per
batch it gathers the rows, computes the BPR gradient by hand and adds the updates straight
into the model's embedding weights with `index_add_` (no dense gradient tables, no optimizer
state, buffers reused across batches). Per sample b = (u, i, j), i a training item of u and j
a sampled negative, with x = p_u·(q_i − q_j) + b_i − b_j and the objective

    ℓ_b = −ln σ(x) + λ (‖p_u‖² + ‖q_i‖² + ‖q_j‖²) + λ_b (b_i² + b_j²),

a batch applies θ ← θ − lr Σ_b ∇_θ ℓ_b, all samples of the batch at once (equal to one SGD
step on the batch's summed loss; `tests/test_bpr_solver.py` checks it against autograd on
`BPRLoss`). An epoch draws as many (u, i) pairs as there are training pairs, uniformly with
replacement (Rendle's bootstrap sampling), and one negative each from `sampler`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mfzoo.data.interactions import Interactions
from mfzoo.data.sampling import Sampler


@torch.no_grad()
def bpr_step(model, users: Tensor, positives: Tensor, negatives: Tensor, lr: float, l2: float, l2_bias: float = 0.0) -> Tensor:
    """One fused SGD step on Σ_b ℓ_b (module docstring) for an `MF`-like model with
    `user_embedding`, `item_embedding` and, when `model.biases`, `item_bias`. Returns the
    mean −ln σ(x) of the batch (before the update)."""
    P, Q = model.user_embedding.weight, model.item_embedding.weight
    p = P.index_select(0, users)  # [B, D]
    q_i = Q.index_select(0, positives)  # [B, D]
    q_j = Q.index_select(0, negatives)  # [B, D]
    diff = q_i - q_j  # [B, D]
    x = (p * diff).sum(1)  # [B]
    biases = getattr(model, "biases", False)
    if biases:
        b = model.item_bias.weight[:, 0]
        x += b.index_select(0, positives) - b.index_select(0, negatives)
    loss = torch.nn.functional.softplus(-x).mean()
    # θ ← θ − lr (−z dx/dθ + 2λθ), summed over the samples that use θ, z = σ(−x) = −dℓ/dx.
    # The updates are scaled in place before `index_add_`: with alpha != 1 it takes a
    # several-times slower path on CPU.
    z = torch.sigmoid(-x).mul_(lr).unsqueeze(1)  # [B, 1] lr·z
    shrink = -2.0 * l2 * lr
    P.index_add_(0, users, diff.mul_(z).add_(p, alpha=shrink))  # lr(z (q_i − q_j) − 2λ p_u)
    zp = p.mul_(z)  # [B, D] lr·z·p_u (p is no longer needed)
    Q.index_add_(0, positives, q_i.mul_(shrink).add_(zp))  # lr(z p_u − 2λ q_i)
    Q.index_add_(0, negatives, q_j.mul_(shrink).sub_(zp))  # lr(−z p_u − 2λ q_j)
    if biases:
        z, shrink_bias = z[:, 0], -2.0 * l2_bias * lr
        b_i, b_j = b.index_select(0, positives), b.index_select(0, negatives)
        b.index_add_(0, positives, b_i.mul_(shrink_bias).add_(z))
        b.index_add_(0, negatives, b_j.mul_(shrink_bias).sub_(z))
    return loss


def bpr_epoch(
    model, train: Interactions, sampler: Sampler, lr: float = 0.05, l2: float = 0.0025, l2_bias: float = 0.0,
    batch_size: int = 16384, generator: torch.Generator | None = None,
) -> float:
    """One epoch of LearnBPR over `train` (len(train) bootstrap samples, one negative each from
    `sampler`); returns the mean −ln σ(x). Batches of 16k keep the gathered rows in cache, which
    matters more on a CPU than fewer, larger steps."""
    if sampler.n_negatives != 1:
        raise ValueError("bpr_epoch draws one negative per positive: use a sampler with n_negatives=1")
    device = model.user_embedding.weight.device
    users, items = train.users.to(device), train.items.to(device)
    n, total, steps = len(train), 0.0, 0
    for start in range(0, n, batch_size):
        rows = torch.randint(n, (min(batch_size, n - start),), generator=generator).to(device)  # [B]
        u, i = users.index_select(0, rows), items.index_select(0, rows)
        j, _ = sampler(u, generator)  # [B, 1]
        total += float(bpr_step(model, u, i, j[:, 0], lr, l2, l2_bias))
        steps += 1
    return total / max(steps, 1)
