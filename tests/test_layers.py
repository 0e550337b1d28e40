import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.layers import MLP, Dropout, InnerProductInteraction


def test_dropout_keeps_each_value_with_probability_one_minus_p_and_scales_by_its_inverse():
    torch.manual_seed(0)
    dropout = Dropout(0.2).train()
    out = dropout(torch.ones(1000, 1000))
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.002  # 1e6 draws: standard error 4e-4
    assert torch.equal(out[kept], torch.full_like(out[kept], 65536 / (65536 - 13107)))
    assert abs(out.mean().item() - 1.0) < 0.003  # unbiased


def test_dropout_mask_is_independent_across_positions():
    torch.manual_seed(1)
    kept = Dropout(0.5).train()(torch.ones(4000, 4)) != 0
    # the four 16-bit lanes of one random word land in one row: they must not agree more than chance
    same = (kept[:, 0] == kept[:, 1]).float().mean().item()
    assert abs(same - 0.5) < 0.03
    assert abs(kept.float().mean(0) - 0.5).max() < 0.03


def test_dropout_is_identity_in_eval_and_at_zero_and_follows_the_global_seed():
    x = torch.randn(7, 5)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    torch.manual_seed(3)
    first = Dropout(0.3).train()(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.3).train()(x), first)


def test_dropout_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(4)
    x = torch.randn(33, 3, requires_grad=True)  # 99 values: not a multiple of the four lanes in a word
    out = Dropout(0.4).train()(x)
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float() * (65536 / (65536 - 26214)))


def test_dropout_keeps_the_input_dtype():
    assert Dropout(0.1).train()(torch.ones(8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_rejects_probabilities_outside_zero_one(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)


def test_mlp_layer_order_matches_fuxictr():
    mlp = MLP(6, [4, 3], output_dim=1, dropout=0.1, batch_norm=True)
    kinds = [type(layer).__name__ for layer in mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert mlp(torch.randn(5, 2, 6)).shape == (5, 2, 1)


def test_inner_product_interaction_by_hand():
    # x_0 = (1, 0), x_1 = (0, 2), x_2 = (1, 1): <x_0, x_1> = 0, <x_0, x_2> = 1, <x_1, x_2> = 2, |x_1|^2 = 4, ...
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]]).repeat(2, 1, 1)
    pairs, matrix = InnerProductInteraction(3, "pairs"), InnerProductInteraction(3, "matrix")
    assert torch.equal(pairs(x), torch.tensor([[0.0, 1.0, 2.0]] * 2))  # i < j, row by row
    assert torch.equal(matrix(x), torch.tensor([[1.0, 0.0, 1.0, 0.0, 4.0, 2.0, 1.0, 2.0, 2.0]] * 2))
    assert (pairs.output_dim, matrix.output_dim) == (3, 9)
    assert not list(pairs.parameters()) and not pairs.state_dict()  # nothing to train or to save
    with pytest.raises(CtrbenchError, match="unknown inner product output 'triangle'"):
        InnerProductInteraction(3, "triangle")
