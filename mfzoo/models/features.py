"""Matrix factorisation with side information: factors are an id part plus pooled feature
embeddings (SVDFeature, Chen et al. 2012; LightFM, Kula 2015).

    p_u = s_u e_u + (1/Z_u) Σ_{f ∈ F(u)} w_uf a_f + x̃_u A        (user factors)
    q_i = s_i v_i + (1/Z_i) Σ_{g ∈ G(i)} w_ig c_g + x̃_i C        (item factors)
    r̂_ui = μ + b_u + b_i + p_u · q_i,
    b_u = s_u β_u + (1/Z_u) Σ_f w_uf α_f + x̃_u α_x,   b_i likewise with γ,

with e_u, v_i the id embeddings, a_f, c_g the embeddings of the categorical features of the
row (`Features` multi-hot entries with weights w), x̃ its numeric features standardised over
the table (zero mean, unit variance: buffers set in `prepare`), A, C [d, dim] their linear
maps, and Z = Σ_f w_f (mean pooling, `pooling="mean"`; 1 for `"sum"` or a row without
features). s_r = 1 if row r has training interactions, else 0 (set in `prepare` from the
training counts): a user or item never seen in training (a cold start) has no id part and is
scored from its features alone, so its id embedding, whatever it holds, never changes a score.

Feature tables come from the training set (`train.user_features`, `train.item_features`,
indexed by model id) in `prepare`, which sizes the feature embeddings from their vocabularies
and keeps the tables as (non-persistent) buffers: `item_factors()` pools over the whole
catalogue without a batch. A batch that carries its own feature rows (`Batch.item_features`,
`DataModule(batch_features=True)`) is scored with those rows instead (same pooling).

`item_id_dropout` (DropoutNet, Volkovs et al. 2017): in training, each item row of a batch
loses its id part with this probability, so the feature part must predict alone, as it must
for cold items. Off (0) in evaluation, where `user_factors() @ item_factors().T` equals the
scores exactly (with biases, `[p_u, μ + b_u, 1] · [q_i, 1, b_i]`).

`penalty`: element 0 sums the squared norms of the id parts s_r e_r and of the pooled feature
parts of the factors of every user and item use in the batch; element 1 the same for biases.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import Tensor, nn

from mfzoo.checks import at_least, nonnegative
from mfzoo.data.batch import Batch
from mfzoo.data.errors import DataError
from mfzoo.data.features import Features
from mfzoo.data.interactions import Interactions
from mfzoo.models.embedding import add_id_tables, row_norm_sum, rows

Side = Literal["user", "item"]


class FeatureMF(nn.Module):
    """Biased MF whose factors add pooled feature embeddings (see the module docstring).

    Args:
        n_users, n_items: sizes of the id spaces.
        dim: number of latent factors.
        biases: learn b_u, b_i (id and feature parts) and add the training mean μ.
        init_std: id and feature embeddings start as N(0, init_std²); biases at 0.
        user_features, item_features: use the training set's tables on that side (False: the
            side is id-only, e.g. an ablation).
        pooling: "mean" (Z = Σ w, the default: items with many genres are not louder) or "sum".
        item_id_dropout: probability of dropping an item row's id part in training, in [0, 1).
    """

    # the tables `add_id_tables` registers (the biases only with `biases`) and the buffers
    user_embedding: nn.Embedding
    item_embedding: nn.Embedding
    user_bias: nn.Embedding
    item_bias: nn.Embedding
    global_mean: Tensor
    user_seen: Tensor
    item_seen: Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        biases: bool = True,
        init_std: float = 0.1,
        user_features: bool = True,
        item_features: bool = True,
        pooling: Literal["mean", "sum"] = "mean",
        item_id_dropout: float = 0.0,
    ):
        super().__init__()
        for name, size in (("n_users", n_users), ("n_items", n_items), ("dim", dim)):
            at_least(name, size, 1)
        nonnegative("init_std", init_std)
        if pooling not in ("mean", "sum"):
            raise ValueError(f"pooling must be 'mean' or 'sum', got {pooling!r}")
        if not (nonnegative("item_id_dropout", item_id_dropout) < 1.0):
            raise ValueError(f"item_id_dropout must be in [0, 1), got {item_id_dropout!r}")
        self.n_users, self.n_items, self.dim, self.biases = n_users, n_items, dim, biases
        self.init_std, self.pooling, self.item_id_dropout = init_std, pooling, item_id_dropout
        self.use = {"user": user_features, "item": item_features}
        add_id_tables(self, n_users, n_items, dim, init_std, biases)
        # s_r: 1 for rows with training interactions; all ones until `prepare` sees the counts
        self.register_buffer("user_seen", torch.ones(n_users))
        self.register_buffer("item_seen", torch.ones(n_items))
        self.vocabulary: dict[
            str, tuple[str, ...]
        ] = {}  # side -> its table's vocabulary (set by `prepare`)
        self.dense_names: dict[str, tuple[str, ...]] = {}  # side -> its table's numeric columns
        self.feature_embedding = nn.ModuleDict()  # side -> nn.Embedding(V, dim)
        self.feature_bias = nn.ModuleDict()  # side -> nn.Embedding(V, 1)
        self.dense_map = nn.ParameterDict()  # side -> [d, dim]; f"{side}_bias" -> [d, 1]

    # training statistics and tables ------------------------------------------------------
    def prepare(self, train: Interactions, evaluation: Interactions | None = None) -> None:
        """μ and the seen flags s_u, s_i from the training set; the feature embeddings sized
        from its tables (re-created: call before training or loading weights). Id embeddings
        and biases of unseen rows are zeroed (they are masked by s in any case)."""
        device = self.user_embedding.weight.device
        if self.biases:
            self.global_mean.fill_(float(train.values.double().mean()))
        with torch.no_grad():
            for side, ids, seen in (
                ("user", train.users, self.user_seen),
                ("item", train.items, self.item_seen),
            ):
                seen.copy_((torch.bincount(ids.to(device), minlength=seen.numel()) > 0).to(seen))
                getattr(self, f"{side}_embedding").weight.mul_(seen.unsqueeze(1))
                if self.biases:
                    getattr(self, f"{side}_bias").weight.mul_(seen.unsqueeze(1))
        self.feature_embedding, self.feature_bias, self.dense_map = (
            nn.ModuleDict(),
            nn.ModuleDict(),
            nn.ParameterDict(),
        )
        self.vocabulary, self.dense_names = {}, {}
        tables: tuple[tuple[Side, Features | None, int], ...] = (
            ("user", train.user_features, self.n_users),
            ("item", train.item_features, self.n_items),
        )
        for side, table, n in tables:
            for name in [b for b in self._buffers if b.startswith(f"{side}_table_")]:
                del self._buffers[name]
            if not self.use[side]:
                continue
            if table is None:  # without its tables the model would silently be plain MF
                raise DataError(
                    f"FeatureMF(with {side} features) needs the training data's {side} feature "
                    f"table, and the data has none: load it (MovieLens-100K: "
                    "data.source.features=true; a table: "
                    f"data.source.{side}_features=FILE) or set model.{side}_features=false"
                )
            if len(table) != n:
                raise ValueError(
                    f"the {side} feature table has {len(table)} rows, the model {n} {side}s"
                )
            self._add_table(side, table.to(device))

    def _add_table(self, side: Side, table: Features) -> None:
        """Feature embeddings for `table`, and the table as non-persistent buffers (they come
        from the data, which every load prepares from; they follow the model's device)."""
        device = self.user_embedding.weight.device
        if table.n_categories:
            embedding = self.feature_embedding[side] = nn.Embedding(
                table.n_categories, self.dim, device=device
            )
            nn.init.normal_(embedding.weight, std=self.init_std)
            if self.biases:
                feature_bias = self.feature_bias[side] = nn.Embedding(
                    table.n_categories, 1, device=device
                )
                nn.init.zeros_(feature_bias.weight)
        for field in ("offsets", "indices", "weights"):
            self.register_buffer(f"{side}_table_{field}", getattr(table, field), persistent=False)
        if table.n_dense:
            assert table.dense is not None  # numeric columns come with their values
            # standardised over the table, so that one init_std suits every column
            mean, std = table.dense.double().mean(0), table.dense.double().std(0, unbiased=False)
            std = torch.where(std > 0, std, torch.ones_like(std))
            self.register_buffer(
                f"{side}_table_dense",
                ((table.dense.double() - mean) / std).float(),
                persistent=False,
            )
            self.register_buffer(f"{side}_table_dense_mean", mean.float(), persistent=False)
            self.register_buffer(f"{side}_table_dense_std", std.float(), persistent=False)
            self.dense_map[side] = nn.Parameter(
                torch.randn(table.n_dense, self.dim, device=device) * self.init_std
            )
            if self.biases:
                self.dense_map[f"{side}_bias"] = nn.Parameter(
                    torch.zeros(table.n_dense, 1, device=device)
                )
        self.vocabulary[side], self.dense_names[side] = table.vocabulary, table.dense_names

    def table(self, side: Side) -> Features | None:
        """The side's feature table as the model uses it (numeric columns standardised), or None."""
        if side not in self.vocabulary:
            return None
        # the buffers `_add_table` registered with the vocabulary (dense only with numeric columns)
        get = lambda field: getattr(self, f"{side}_table_{field}")  # noqa: E731
        return Features(
            get("offsets"),
            get("indices"),
            get("weights"),
            self.vocabulary[side],
            getattr(self, f"{side}_table_dense", None),
            self.dense_names[side],
        )

    # the parts of a factor -----------------------------------------------------------------
    def _pool(self, side: Side, rows_features: Features, raw: bool) -> tuple[Tensor, Tensor]:
        """The feature part of the factors and biases of the rows of `rows_features`:
        [R, dim] and [R]. `raw`: numeric columns as in the data (a batch's rows), standardised
        here like the model's table."""
        n = len(rows_features)
        device = self.user_embedding.weight.device
        factors = torch.zeros(n, self.dim, device=device)
        bias = torch.zeros(n, device=device)
        if (
            rows_features.vocabulary != self.vocabulary[side]
            or rows_features.dense_names != self.dense_names[side]
        ):
            raise ValueError(
                f"the batch's {side} features have other columns than the model's {side} table"
            )
        if rows_features.n_categories:
            # a gather and a scatter-add: several times faster on CPU than embedding_bag with
            # per-sample weights (its backward), the same sums
            indices, weights = rows_features.indices, rows_features.weights  # [nnz], [nnz]
            row_of = torch.repeat_interleave(
                torch.arange(n, device=device),
                rows_features.offsets.diff(),
                output_size=len(indices),
            )  # [nnz]
            if self.pooling == "mean":
                total = torch.zeros(n, device=device).index_add_(0, row_of, weights)  # [R] Z = Σ w
                total = torch.where(total != 0, total, torch.ones_like(total))
                weights = weights / total.index_select(0, row_of)  # [nnz]
            # the ModuleDicts hold the nn.Embedding tables of `_add_table`
            embedding = cast(nn.Embedding, self.feature_embedding[side])
            vectors = embedding.weight.index_select(0, indices) * weights.unsqueeze(1)  # [nnz, dim]
            factors = factors.index_add_(0, row_of, vectors)  # [R, dim]
            if self.biases:
                feature_bias = cast(nn.Embedding, self.feature_bias[side])
                values = feature_bias.weight.squeeze(1).index_select(0, indices) * weights  # [nnz]
                bias = bias.index_add_(0, row_of, values)  # [R]
        if rows_features.n_dense:
            dense = rows_features.dense  # [R, d]
            if raw:
                dense = (dense - getattr(self, f"{side}_table_dense_mean")) / getattr(
                    self, f"{side}_table_dense_std"
                )
            factors = factors + dense @ self.dense_map[side]  # [R, dim]
            if self.biases:
                bias = bias + (dense @ self.dense_map[f"{side}_bias"]).squeeze(1)  # [R]
        return factors, bias

    def _id_part(self, side: Side, ids: Tensor) -> tuple[Tensor, Tensor]:
        """s_r e_r [R, dim] and s_r β_r [R] of ids [R] (zero for rows unseen in training)."""
        s = (self.user_seen if side == "user" else self.item_seen).index_select(0, ids)  # [R]
        factors = rows(
            self.user_embedding if side == "user" else self.item_embedding, ids
        ) * s.unsqueeze(1)
        if not self.biases:
            return factors, torch.zeros_like(s)
        return factors, rows(self.user_bias if side == "user" else self.item_bias, ids).squeeze(
            1
        ) * s

    def _feature_part(
        self, side: Side, ids: Tensor, batch_rows: Features | None
    ) -> tuple[Tensor, Tensor]:
        """The feature part of the factors [R, dim] and biases [R] of ids [R]: pooled per row
        from `batch_rows` when the batch brings them, else once per distinct id from the
        model's table; zeros for a side without a table."""
        if side not in self.vocabulary:
            device = self.user_embedding.weight.device
            return torch.zeros(len(ids), self.dim, device=device), torch.zeros(
                len(ids), device=device
            )
        if batch_rows is not None:
            return self._pool(side, batch_rows, raw=True)
        unique, inverse = torch.unique(ids, return_inverse=True)  # [U], [R]
        table = self.table(side)
        assert table is not None  # the side has a vocabulary, so a table
        factors, bias = self._pool(side, table.take(unique), raw=False)  # [U, dim], [U]
        return factors.index_select(0, inverse), bias.index_select(0, inverse)

    # scores ---------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> Tensor:
        """Scores of `batch.users[b]` for `batch.items[b, m]` from the id and feature parts
        (the batch's own feature rows where it carries them): [B, M]."""
        users, items = batch.users, batch.items  # [B], [B, M]
        b, m = items.shape
        flat = items.reshape(-1)  # [B*M]
        e_u, be_u = self._id_part("user", users)  # [B, dim], [B]
        f_u, bf_u = self._feature_part("user", users, batch.user_features)
        e_i, be_i = self._id_part("item", flat)  # [B*M, dim], [B*M]
        f_i, bf_i = self._feature_part("item", flat, batch.item_features)
        if self.training and self.item_id_dropout > 0:
            # [B*M]
            keep = (torch.rand(len(flat), device=flat.device) >= self.item_id_dropout).to(e_i.dtype)
            e_i, be_i = e_i * keep.unsqueeze(1), be_i * keep
        p = e_u + f_u  # [B, dim]
        q = (e_i + f_i).view(b, m, self.dim)  # [B, M, dim]
        scores = (p.unsqueeze(1) * q).sum(-1)  # [B, M]
        if self.biases:
            scores = (
                scores + (self.global_mean + be_u + bf_u).unsqueeze(1) + (be_i + bf_i).view(b, m)
            )
        return scores

    def penalty(self, batch: Batch) -> Tensor:
        """[2]: Σ over the batch's users and items (every use counts) of ‖s_r e_r‖² +
        ‖feature part‖² of their factors; element 1 the same for the biases."""
        factors, bias = (
            torch.zeros((), device=batch.users.device),
            torch.zeros((), device=batch.users.device),
        )
        sides: tuple[tuple[Side, Tensor, Features | None], ...] = (
            ("user", batch.users, batch.user_features),
            ("item", batch.items.reshape(-1), batch.item_features),
        )
        for side, ids, batch_rows in sides:
            seen = self.user_seen if side == "user" else self.item_seen
            factors = factors + row_norm_sum(getattr(self, f"{side}_embedding"), ids, seen)
            if self.biases:
                bias = bias + row_norm_sum(getattr(self, f"{side}_bias"), ids, seen)
            if side not in self.vocabulary:
                continue
            if batch_rows is not None:
                f, fb = self._pool(side, batch_rows, raw=True)  # [R, dim], [R]
                uses = torch.ones(len(f), device=f.device)
            else:  # once per distinct row, weighted by its uses
                unique, counts = torch.unique(ids, return_counts=True)  # [U], [U]
                table = self.table(side)
                assert table is not None  # the side has a vocabulary, so a table
                f, fb = self._pool(side, table.take(unique), raw=False)
                uses = counts.to(f.dtype)
            factors = factors + (uses * f.pow(2).sum(1)).sum()
            bias = bias + (uses * fb.pow(2)).sum()
        return torch.stack([factors, bias])

    def _all(self, side: Side) -> tuple[Tensor, Tensor]:
        """Factors [n, dim] and biases [n] of every row of a side (evaluation: no dropout)."""
        n = self.n_users if side == "user" else self.n_items
        ids = torch.arange(n, device=self.user_embedding.weight.device)
        (e, be), (f, bf) = self._id_part(side, ids), self._feature_part(side, ids, None)
        return e + f, be + bf

    def user_factors(self) -> Tensor:
        """[n_users, dim(+2)]: `[p_u, μ + b_u, 1]` with biases, so that
        `user_factors() @ item_factors().T` equals the scores exactly."""
        p, b = self._all("user")
        if not self.biases:
            return p
        return torch.cat(
            [p, (self.global_mean + b).unsqueeze(1), torch.ones_like(b).unsqueeze(1)], dim=1
        )

    def item_factors(self) -> Tensor:
        """[n_items, dim(+2)]: `[q_i, 1, b_i]` with biases (see `user_factors`); cold items'
        rows come from their features alone."""
        q, b = self._all("item")
        if not self.biases:
            return q
        return torch.cat([q, torch.ones_like(b).unsqueeze(1), b.unsqueeze(1)], dim=1)
