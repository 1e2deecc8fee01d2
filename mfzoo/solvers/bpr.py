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
from mfzoo.solvers.parallel import cpu_streams, run_streams


class Workspace:
    """Reused buffers for `bpr_step`: on a CPU a fresh multi-megabyte tensor per batch costs
    page faults on first touch that take longer than the gather that fills it. One per stream."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def rows(self, name: str, like: Tensor, n: int) -> Tensor:
        """An uninitialised [n, like.shape[1]] tensor of like's dtype and device, reused by name."""
        size = n * like.shape[1]
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffers[name] = like.new_empty(size)
        return buffer[:size].view(n, like.shape[1])


@torch.no_grad()
def bpr_step(
    model, users: Tensor, positives: Tensor, negatives: Tensor, lr: float, l2: float, l2_bias: float = 0.0,
    workspace: Workspace | None = None,
) -> Tensor:
    """One fused SGD step on Σ_b ℓ_b (module docstring) for an `MF`-like model with
    `user_embedding`, `item_embedding` and, when `model.biases`, `item_bias`. Returns the
    mean −ln σ(x) of the batch (before the update). `workspace` keeps the [B, D] buffers
    between calls (`bpr_epoch` passes one)."""
    P, Q = model.user_embedding.weight, model.item_embedding.weight
    ws = workspace or Workspace()
    B = len(users)
    p = torch.index_select(P, 0, users, out=ws.rows("p", P, B))  # [B, D]
    q_i = torch.index_select(Q, 0, positives, out=ws.rows("q_i", Q, B))  # [B, D]
    q_j = torch.index_select(Q, 0, negatives, out=ws.rows("q_j", Q, B))  # [B, D]
    diff = torch.sub(q_i, q_j, out=ws.rows("diff", Q, B))  # [B, D]
    x = torch.bmm(p.unsqueeze(1), diff.unsqueeze(2)).view(B)  # [B] p_u·(q_i − q_j), no [B, D] temporary
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
    Q.index_add_(0, positives, torch.add(zp, q_i, alpha=shrink, out=q_i))  # lr(z p_u − 2λ q_i), one pass
    Q.index_add_(0, negatives, q_j.mul_(shrink).sub_(zp))  # lr(−z p_u − 2λ q_j)
    if biases:
        z, shrink_bias = z[:, 0], -2.0 * l2_bias * lr
        b_i, b_j = b.index_select(0, positives), b.index_select(0, negatives)
        b.index_add_(0, positives, b_i.mul_(shrink_bias).add_(z))
        b.index_add_(0, negatives, b_j.mul_(shrink_bias).sub_(z))
    return loss


def bpr_epoch(
    model, train: Interactions, sampler: Sampler, lr: float = 0.05, l2: float = 0.0025, l2_bias: float = 0.0,
    batch_size: int = 16384, generator: torch.Generator | None = None, threads: int | None = 1,
) -> float:
    """One epoch of LearnBPR over `train` (len(train) bootstrap samples, one negative each from
    `sampler`); returns the mean −ln σ(x). Batches of 16k keep the gathered rows in cache, which
    matters more on a CPU than fewer, larger steps.

    threads: 1 (the default) runs the batches one after another: the epoch is reproducible
        bit for bit from a seeded `generator`. More (None: `torch.get_num_threads()`) runs that
        many streams of batches at once on a CPU (`mfzoo.solvers.parallel.run_streams`), each
        adding its updates into the shared weights without locks, as Hogwild! (Niu et al. 2011)
        and implicit's BPR do: the streams' samples are drawn from generators seeded from
        `generator`, but which stream's update of a shared row lands first varies between runs,
        so the factors are not reproducible bit for bit (the objective and the metrics are, to
        noise). Faster on a multi-core CPU: one stream of 16k-row gathers and scatters keeps a
        second core mostly idle.
    """
    if sampler.n_negatives != 1:
        raise ValueError("bpr_epoch draws one negative per positive: use a sampler with n_negatives=1")
    device = model.user_embedding.weight.device
    streams = cpu_streams(device, threads)
    users, items = train.users.to(device), train.items.to(device)
    n = len(train)
    seeds = torch.randint(2**62, (streams,), generator=generator).tolist() if streams > 1 else None

    def run(stream: int) -> tuple[float, int]:
        g = generator if seeds is None else torch.Generator().manual_seed(seeds[stream])
        total, steps, workspace = 0.0, 0, Workspace()
        share = n // streams + (stream < n % streams)  # this stream's samples
        for start in range(0, share, batch_size):
            rows = torch.randint(n, (min(batch_size, share - start),), generator=g).to(device)  # [B]
            u, i = users.index_select(0, rows), items.index_select(0, rows)
            j, _ = sampler(u, g)  # [B, 1]
            total += float(bpr_step(model, u, i, j[:, 0], lr, l2, l2_bias, workspace))
            steps += 1
        return total, steps

    results = run_streams(run, streams)
    return sum(t for t, _ in results) / max(sum(s for _, s in results), 1)
