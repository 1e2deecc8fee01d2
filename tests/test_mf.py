import pytest
import torch

from mfzoo.data.batch import Batch
from mfzoo.models.embedding import row_norm_sum
from mfzoo.models.mf import MF


def _model(biases=True):
    model = MF(n_users=5, n_items=7, dim=3, biases=biases)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.arange(15.0).view(5, 3) / 10)
        model.item_embedding.weight.copy_(-torch.arange(21.0).view(7, 3) / 20)
        if biases:
            model.user_bias.weight.copy_(torch.tensor([[0.1], [0.2], [0.3], [0.4], [0.5]]))
            model.item_bias.weight.copy_(torch.arange(7.0).view(7, 1) / 100)
            model.global_mean.fill_(3.5)
    return model


def test_forward_matches_hand_computation():
    model = _model()
    batch = Batch(users=torch.tensor([1, 4]), items=torch.tensor([[2, 0], [6, 6]]))
    scores = model(batch)
    # user 1: p = [0.3, 0.4, 0.5], b_u = 0.2; item 2: q = [-0.3, -0.35, -0.4], b_i = 0.02
    expected_00 = 3.5 + 0.2 + 0.02 + (0.3 * -0.3 + 0.4 * -0.35 + 0.5 * -0.4)
    assert scores.shape == (2, 2)
    assert scores[0, 0].item() == pytest.approx(expected_00, abs=1e-6)
    # user 4: p = [1.2, 1.3, 1.4], b_u = 0.5; item 6: q = [-0.9, -0.95, -1.0], b_i = 0.06
    expected_1 = 3.5 + 0.5 + 0.06 + (1.2 * -0.9 + 1.3 * -0.95 + 1.4 * -1.0)
    assert scores[1].tolist() == pytest.approx([expected_1, expected_1], abs=1e-6)


def test_funksvd_is_a_plain_dot_product():
    model = _model(biases=False)
    batch = Batch(users=torch.tensor([2]), items=torch.tensor([[3]]))
    p, q = model.user_embedding.weight[2], model.item_embedding.weight[3]
    assert model(batch).item() == pytest.approx(float(p @ q), abs=1e-6)
    assert not hasattr(model, "user_bias")


def test_penalty_counts_each_use_of_a_row():
    model = _model()
    batch = Batch(users=torch.tensor([1, 1, 3]), items=torch.tensor([[0], [2], [2]]))
    P, Q = model.user_embedding.weight, model.item_embedding.weight
    factors = 2 * P[1].pow(2).sum() + P[3].pow(2).sum() + Q[0].pow(2).sum() + 2 * Q[2].pow(2).sum()
    bu, bi = model.user_bias.weight[:, 0], model.item_bias.weight[:, 0]
    bias = 2 * bu[1] ** 2 + bu[3] ** 2 + bi[0] ** 2 + 2 * bi[2] ** 2
    assert model.penalty(batch).tolist() == pytest.approx([factors.item(), bias.item()], rel=1e-6)


def test_row_norm_sum_gather_and_count_paths_agree():
    table = torch.nn.Embedding(1000, 4)
    small = torch.randint(0, 1000, (50,))  # gather path (50 * 4 < 1000)
    large = torch.randint(0, 1000, (900,))  # bincount path
    for index in (small, large):
        expected = table.weight[index].pow(2).sum()
        assert row_norm_sum(table, index).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_only_the_rows_used():
    model = _model()
    batch = Batch(users=torch.tensor([0]), items=torch.tensor([[4]]))
    model(batch).sum().backward()
    grad_u = model.user_embedding.weight.grad
    assert grad_u[0].abs().sum() > 0 and grad_u[1:].abs().sum() == 0
    assert torch.allclose(grad_u[0], model.item_embedding.weight[4].detach())
    assert model.item_bias.weight.grad[4].item() == 1.0


def test_prepare_sets_the_training_mean(ratings):
    model = MF(ratings.n_users, ratings.n_items, dim=2)
    model.prepare(ratings)
    assert model.global_mean.item() == pytest.approx(
        ratings.values.double().mean().item(), rel=1e-6
    )
    assert "global_mean" in model.state_dict()  # restored from checkpoints


def test_sparse_tables_give_the_dense_gradients_row_for_row():
    from mfzoo.data.batch import Batch

    torch.manual_seed(0)
    dense = MF(30, 20, dim=4, biases=True, reg_exponent=1.0)
    sparse = MF(30, 20, dim=4, biases=True, reg_exponent=1.0, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    batch = Batch(
        torch.tensor([0, 3, 3, 7]), torch.tensor([[1, 2], [5, 1], [0, 0], [19, 4]]), torch.ones(4)
    )
    for model in (dense, sparse):
        (model(batch).pow(2).sum() + model.penalty(batch).sum()).backward()
    for (name, d), (_, s) in zip(dense.named_parameters(), sparse.named_parameters(), strict=True):
        assert s.grad.is_sparse, name
        torch.testing.assert_close(s.grad.to_dense(), d.grad, msg=name)
    # rows no batch used get no update from SparseAdam
    optimizer = torch.optim.SparseAdam(list(sparse.parameters()), lr=0.1)
    before = sparse.user_embedding.weight.detach().clone()
    optimizer.step()
    moved = (sparse.user_embedding.weight.detach() != before).any(1)
    assert moved.nonzero().squeeze(1).tolist() == [0, 3, 7]


def test_sparse_gradients_and_the_optimizer_must_match(tmp_path):
    from hydra import compose, initialize_config_dir

    from mfzoo.training.run import train
    from mfzoo.training.rundir import RunError
    from tests.conftest import CONFIG_DIR

    small = [
        "data/source=synthetic",
        "data.source.n_users=200",
        "data.source.n_items=100",
        "data.source.n_interactions=4000",
        "logger=none",
        "progress=false",
        "trainer.max_epochs=3",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        ok = compose("train", overrides=["+model.sparse=true", "optim=sparse_adam", *small])
        dense_with_sparse = compose("train", overrides=["optim=sparse_adam", *small])
        sparse_with_dense = compose("train", overrides=["+model.sparse=true", *small])
    metrics = train(ok, tmp_path / "ok")
    assert metrics["test"]["rmse"] < 1.2
    with pytest.raises(RunError, match=r"model\.sparse=true"):
        train(dense_with_sparse, tmp_path / "a")
    with pytest.raises(RunError, match="optim=sparse_adam"):
        train(sparse_with_dense, tmp_path / "b")
