import math

import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.flops import count_parameters
from model_zoo.autoint_plus import AutoIntPlus, MultiHeadSelfAttention

BARS_FRAPPE_VOCAB = [5371] + [2] * 9  # 5,389 embedding rows over 10 fields, as in BARS's Frappe_x1 logs


def identity_layer(dim: int, **options) -> MultiHeadSelfAttention:
    layer = MultiHeadSelfAttention(dim, dim, num_heads=1, **options)
    with torch.no_grad():
        for projection in (layer.query, layer.key, layer.value):
            projection.weight.copy_(torch.eye(dim))
    return layer


@pytest.mark.parametrize("use_scale", [False, True])
def test_attention_layer_by_hand(use_scale):
    # Two fields e1 = [1, 0], e2 = [0, 1] with W_Q = W_K = W_V = I: scores <e_i, e_j> / s are 1/s on the
    # diagonal and 0 elsewhere, so field 1 attends a = e^(1/s) / (1 + e^(1/s)) to itself.
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    a = 1 / (1 + math.exp(-1 / (math.sqrt(2) if use_scale else 1)))
    expected = torch.tensor([[[a + 1, 1 - a], [1 - a, a + 1]]])  # attention output + identity residual
    assert torch.allclose(identity_layer(2, use_scale=use_scale)(x), expected)


def test_residual_switch_and_relu():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    a = 1 / (1 + math.exp(-1))
    no_residual = identity_layer(2, use_residual=False)
    assert torch.allclose(no_residual(x), torch.tensor([[[a, 1 - a], [1 - a, a]]]))
    assert torch.equal(no_residual(-x), torch.zeros(1, 2, 2))  # same weights, negated values: ReLU clips all


def test_layer_norm_precedes_the_relu():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2)
    plain, normed = identity_layer(2), identity_layer(2, layer_norm=True)
    weights = torch.softmax(x @ x.transpose(1, 2), dim=-1)
    pre_activation = weights @ x + x
    assert torch.allclose(plain(x), torch.relu(pre_activation), atol=1e-6)
    assert torch.allclose(normed(x), torch.relu(torch.nn.functional.layer_norm(pre_activation, (2,))), atol=1e-6)


def test_heads_attend_independently_and_are_concatenated():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(3, 4, num_heads=2, use_residual=False)
    x = torch.randn(5, 6, 3)
    heads = []
    for h in range(2):
        rows = slice(2 * h, 2 * h + 2)
        q, k, v = (x @ p.weight[rows].T for p in (layer.query, layer.key, layer.value))
        heads.append(torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v)
    assert torch.allclose(layer(x), torch.relu(torch.cat(heads, dim=-1)), atol=1e-6)


def test_residual_is_projected_only_when_the_width_changes():
    assert MultiHeadSelfAttention(3, 4, num_heads=2).residual is not None
    assert MultiHeadSelfAttention(4, 4, num_heads=2).residual is None
    assert MultiHeadSelfAttention(3, 4, num_heads=2, use_residual=False).residual is None


def test_logit_sums_attention_head_dnn_and_wide_parts(tiny_fmap, tiny_batch):
    torch.manual_seed(0)
    model = AutoIntPlus(tiny_fmap, embedding_dim=4, attention_layers=2, num_heads=2, attention_dim=6,
                        dnn_hidden_units=(8,), use_wide=True).eval()
    with torch.no_grad():
        x0 = model.embedding(tiny_batch)
        expected = (model.attention_output(model.attention(x0).flatten(1)) + model.dnn(x0.flatten(1))).squeeze(-1)
        expected += model.wide(tiny_batch).sum(dim=(1, 2))
        assert torch.allclose(model(tiny_batch), expected)
    plain = AutoIntPlus(tiny_fmap, dnn_hidden_units=())
    assert plain.dnn is None and plain.wide is None
    plain(tiny_batch).sum().backward()
    assert plain.embedding.table.weight.grad.abs().sum() > 0


def test_bars_frappe_config_has_bars_parameter_count(categorical_dataset):
    fmap, _ = categorical_dataset(BARS_FRAPPE_VOCAB)
    # AutoInt_frappe_x1_006_dba8e61c: "Total number of parameters: 622180."
    model = AutoIntPlus(fmap, embedding_dim=10, attention_layers=5, num_heads=4, attention_dim=128,
                        use_scale=True, layer_norm=True, dnn_hidden_units=(400, 400, 400), net_dropout=0.1,
                        batch_norm=True)
    assert sum(count_parameters(model)) == 622180


def test_heads_must_divide_the_attention_width(categorical_dataset):
    fmap, _ = categorical_dataset([5, 5])
    with pytest.raises(CtrbenchError, match="attention_dim"):
        AutoIntPlus(fmap, attention_dim=10, num_heads=4)
