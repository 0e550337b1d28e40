"""Wukong's blocks against hand computations on tiny inputs."""

import math

import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from model_zoo.wukong import FactorizationMachine, FactorizationMachineBlock, Wukong, WukongLayer

# One example, n = 3 embeddings of d = 2.
X = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
LAYER = dict(fm="full", fm_rank=1, attention_mlp_units=(), fmb_mlp_units=(), fmb_layer_norm=True, dropout=0.0,
             use_fmb=True, use_lcb=True, use_residual=True)


def hand_layer(fmb_embeddings=1, lcb_embeddings=2, layer_norm=False, **overrides):
    """A layer on X with hand-set weights: the FMB MLP is one Linear(9 -> 2) reading LN(flatten(XX^T))."""
    layer = WukongLayer(3, 2, fmb_embeddings=fmb_embeddings, lcb_embeddings=lcb_embeddings,
                        layer_norm=layer_norm, **{**LAYER, **overrides})
    with torch.no_grad():
        if layer.fmb is not None:
            (linear,) = layer.fmb.mlp
            linear.weight.copy_(torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 1.0],     # picks entry (2, 2)
                                              [1.0, -1, 0, 0, 0, 0, 0, 0, 0]]))  # entry (0, 0) - entry (0, 1)
            linear.bias.zero_()
        if layer.lcb is not None:
            layer.lcb.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, -1]])[:lcb_embeddings])
    return layer


# XX^T = [[1,0,1],[0,1,1],[1,1,2]]; flattened, its 9 values have mean 8/9 and variance 26/81, so
# LN(flatten) = (9v - 8) / S = [1,-8,1,-8,1,1,1,1,10] / S with S = 9 sqrt(26/81 + eps) (LayerNorm's eps
# is 1e-5), and the FMB outputs the single embedding [10, 1 - (-8)] / S.
# LCB: [1,0,0] X = [1,0] and [0,1,-1] X = [-1,0]. Residual: X.
S = 9 * math.sqrt(26 / 81 + 1e-5)
FMB_ROW = [10 / S, 9 / S]
BEFORE_LN = torch.tensor([[[FMB_ROW[0] + 1, FMB_ROW[1] + 0], [1 + 0, 0 + 1], [-1 + 1, 0 + 1]]])


def test_layer_matches_hand_computation_before_the_output_layer_norm():
    assert torch.allclose(hand_layer(layer_norm=False)(X), BEFORE_LN, atol=1e-5)


def test_layer_matches_hand_computation_with_the_output_layer_norm():
    # LN over d = 2 maps [a, b] to [h, -h] / sqrt(h^2 + 1e-5) with h = (a - b) / 2.
    half_gaps = [(FMB_ROW[0] + 1 - FMB_ROW[1]) / 2, 0.0, -0.5]
    expected = torch.tensor([[[h / math.sqrt(h * h + 1e-5), -h / math.sqrt(h * h + 1e-5)] for h in half_gaps]])
    assert torch.allclose(hand_layer(layer_norm=True)(X), expected, atol=1e-5)


def test_residual_is_projected_only_when_the_number_of_embeddings_changes():
    assert hand_layer(1, 2).residual_projection is None  # 1 + 2 = 3 = n: identity
    layer = hand_layer(1, 1)
    with torch.no_grad():
        layer.residual_projection.weight.copy_(torch.tensor([[1.0, 1, 0], [0, 0, 1]]))
    # concat(FMB, LCB) = [FMB_ROW, [1, 0]]; W_R X = [[1, 1], [1, 1]]
    expected = torch.tensor([[[FMB_ROW[0] + 1, FMB_ROW[1] + 1], [2.0, 1.0]]])
    assert torch.allclose(layer(X), expected, atol=1e-5)


def test_ablation_switches_zero_their_block():
    no_fmb = hand_layer(use_fmb=False, use_residual=False)
    assert no_fmb.fmb is None
    assert torch.equal(no_fmb(X), torch.tensor([[[0.0, 0.0], [1, 0], [-1, 0]]]))
    no_lcb = hand_layer(use_lcb=False, use_residual=False)
    assert no_lcb.lcb is None
    assert torch.allclose(no_lcb(X), torch.tensor([[FMB_ROW, [0.0, 0.0], [0.0, 0.0]]]), atol=1e-5)
    no_residual = hand_layer(use_residual=False)
    assert torch.allclose(no_residual(X), torch.tensor([[FMB_ROW, [1.0, 0.0], [-1.0, 0.0]]]), atol=1e-5)
    assert hand_layer(1, 1, use_residual=False).residual_projection is None


def test_ablated_model_has_no_parameters_for_the_zeroed_block(tiny_fmap, tiny_batch):
    model = Wukong(tiny_fmap, use_fmb=False, use_residual=False)
    assert not any(".fmb." in name or "residual" in name for name, _ in model.named_parameters())
    x = model.layers[0](model.embed(tiny_batch))
    assert x.shape == (64, 16, 16)
    assert torch.equal(x[:, :8], torch.zeros(64, 8, 16))  # LN of zero embeddings is zero


def test_optimized_fm_with_identity_projection_equals_full_fm():
    torch.manual_seed(0)
    x = torch.randn(5, 4, 3)
    full = FactorizationMachine(4, 3, "full", rank=4, attention_mlp_units=())
    optimized = FactorizationMachine(4, 3, "optimized", rank=4, attention_mlp_units=())
    with torch.no_grad():
        optimized.projection.copy_(torch.eye(4))
    assert torch.allclose(optimized(x), full(x), atol=1e-6)
    # the same holds through the whole block when the MLPs share weights
    blocks = [FactorizationMachineBlock(4, 3, 2, fm, 4, (), (8,), layer_norm=True, dropout=0.0)
              for fm in ("full", "optimized")]
    blocks[1].load_state_dict({**blocks[0].state_dict(), "fm.projection": torch.eye(4)})
    assert torch.allclose(blocks[1](x), blocks[0](x), atol=1e-5)


def test_optimized_fm_by_hand():
    fm = FactorizationMachine(3, 2, "optimized", rank=1, attention_mlp_units=())
    with torch.no_grad():
        fm.projection.copy_(torch.tensor([[1.0], [2.0], [0.0]]))
    # X^T Y = 1 * [1,0] + 2 * [0,1] = [1, 2]; X [1, 2] = [1, 2, 3]
    assert torch.equal(fm(X), torch.tensor([[1.0, 2.0, 3.0]]))


def test_attentive_fm_by_hand():
    fm = FactorizationMachine(3, 2, "attentive", rank=2, attention_mlp_units=())
    with torch.no_grad():  # constant scores: softmax over the 3 embeddings gives Y = 1/3 everywhere
        fm.attention_mlp[0].weight.zero_()
    assert torch.allclose(fm.attentive_projection(X), torch.full((1, 3, 2), 1 / 3))
    # X^T Y = mean embedding [2/3, 2/3] in both columns; X [2/3, 2/3] = [2/3, 2/3, 4/3]
    assert torch.allclose(fm(X), torch.tensor([[2 / 3, 2 / 3, 2 / 3, 2 / 3, 4 / 3, 4 / 3]]))
    torch.manual_seed(0)
    fm = FactorizationMachine(4, 3, "attentive", rank=2, attention_mlp_units=(8,))
    x = torch.randn(5, 4, 3)
    y = fm.attentive_projection(x)
    assert torch.allclose(y.sum(dim=1), torch.ones(5, 2))  # each column: attention weights over the n inputs
    assert torch.allclose(fm(x), (x @ x.transpose(1, 2) @ y).flatten(1), atol=1e-5)


@pytest.mark.parametrize("fm", ["full", "optimized", "attentive"])
def test_every_fm_variant_trains_on_every_feature_type(fm, tiny_fmap, tiny_batch):
    model = Wukong(tiny_fmap, fm=fm, num_layers=3, fmb_embeddings=3, lcb_embeddings=4, dropout=0.1)
    logits = model(tiny_batch)
    assert logits.shape == (64,)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_embedding_layer_options(tiny_fmap, tiny_batch):
    model = Wukong(tiny_fmap, embedding_dim=4, dense_embeddings=2, important_features=("item", "clicked_items"),
                   important_embeddings=3, small_features=("user",), small_embedding_dim=2, small_group_embeddings=2)
    x0 = model.embed(tiny_batch)
    # 2 dense + the 2 plain features, then 3 each for item and clicked_items, then the 2 group embeddings
    assert model.embedding.field_names == ["numeric_0", "numeric_1", "video", "watched_videos"]
    assert x0.shape == (64, 4 + 6 + 2, 4)
    item_rows = model.important.table.weight[tiny_batch.categorical[:, 1].long() + model.important.offset_of["item"]]
    assert torch.equal(x0[:, 4:7], item_rows.view(64, 3, 4))  # a 12-wide row split into 3 embeddings
    small = model.small(tiny_batch)
    assert small.shape == (64, 1, 2) and model.small.table.num_embeddings == 7  # user's rows only
    assert torch.allclose(x0[:, 10:], model.small_group_mlp(small.flatten(1)).view(64, 2, 4))
    model(tiny_batch).sum().backward()
    assert model.important.table.weight.grad.abs().sum() > 0
    assert model.small.table.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"important_features": ("price",)}, "'price' is numeric"),
    ({"important_features": ("user",), "small_features": ("user",)}, "in both important_features and small_features"),
    ({"fm": "fast"}, "unknown FM variant 'fast'"),
])
def test_bad_options_are_one_line_errors(kwargs, message, tiny_fmap):
    with pytest.raises(CtrbenchError, match=message):
        Wukong(tiny_fmap, **kwargs)
