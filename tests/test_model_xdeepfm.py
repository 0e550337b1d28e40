import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.flops import count_parameters, forward_flops
from model_zoo.xdeepfm import CompressedInteractionNetwork, XDeepFM

X0 = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # one row, m = 2 fields, D = 2


def _set(linear: torch.nn.Linear, weight: list, bias: list) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        linear.bias.copy_(torch.tensor(bias))


def test_cin_layer_by_hand():
    cin = CompressedInteractionNetwork(num_fields=2, layer_units=[1])
    # Channels are (i, j) pairs of X^0_i * X^0_j: [1, 4], [3, 8], [3, 8], [9, 16].
    _set(cin.layers[0], [[1.0, 0.5, -1.0, 2.0]], [0.1])
    _set(cin.output, [[2.0]], [-1.0])
    # X^1 = [1, 4] + 0.5 [3, 8] - [3, 8] + 2 [9, 16] + 0.1 = [17.6, 32.1]; pooled 49.7; 2 * 49.7 - 1.
    assert cin(X0).item() == pytest.approx(98.4)


def test_cin_split_half_by_hand():
    cin = CompressedInteractionNetwork(num_fields=2, layer_units=[2, 1], split_half=True)
    _set(cin.layers[0], [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], [0.0, 0.0])  # X^1 = [[1, 4], [9, 16]]
    # Split: [1, 4] feeds layer 2, [9, 16] is pooled (25). Layer 2 channels: [1, 4] * X^0_j = [1, 8], [3, 16].
    _set(cin.layers[1], [[1.0, -1.0]], [0.0])  # X^2 = [-2, -8], pooled -10
    _set(cin.output, [[1.0, 1.0]], [0.0])
    assert cin.output.in_features == 2  # 1 pooled map from layer 1 (its half) + 1 from layer 2
    assert cin(X0).item() == pytest.approx(15.0)


def test_without_split_half_every_map_feeds_both():
    cin = CompressedInteractionNetwork(num_fields=2, layer_units=[2, 1])
    assert [layer.in_features for layer in cin.layers] == [4, 4] and cin.output.in_features == 3


def test_cin_rejects_odd_split_and_empty_layers():
    with pytest.raises(CtrbenchError, match="cin_layer_units"):
        CompressedInteractionNetwork(num_fields=2, layer_units=[3, 2], split_half=True)
    with pytest.raises(CtrbenchError, match="cin_layer_units"):
        CompressedInteractionNetwork(num_fields=2, layer_units=[])


def test_logit_is_linear_plus_cin_plus_dnn(tiny_fmap, tiny_batch):
    model = XDeepFM(tiny_fmap, embedding_dim=4, cin_layer_units=(3, 2), dnn_hidden_units=(8,)).eval()
    x0 = model.embedding(tiny_batch)
    parts = model.linear(tiny_batch) + model.cin(x0) + model.dnn(x0.flatten(1)).squeeze(-1)
    assert torch.allclose(model(tiny_batch), parts, atol=1e-6)
    cin_only = XDeepFM(tiny_fmap, embedding_dim=4, dnn_hidden_units=()).eval()
    assert cin_only.dnn is None
    assert torch.allclose(cin_only(tiny_batch), cin_only.linear(tiny_batch) + cin_only.cin(cin_only.embedding(tiny_batch)))


def test_params_and_flops_match_the_formulas(categorical_only):
    fmap, batch = categorical_only({f"f{i}": 7 + i for i in range(5)}, rows=16)
    m, d, (h1, h2), (u1, u2) = 5, 4, (6, 3), (8, 5)
    model = XDeepFM(fmap, embedding_dim=d, cin_layer_units=(h1, h2), dnn_hidden_units=(u1, u2))
    vocab = sum(7 + i for i in range(5))
    cin_params = (m * m * h1 + h1) + (h1 * m * h2 + h2) + (h1 + h2 + 1)
    dnn_params = (m * d * u1 + u1) + (u1 * u2 + u2) + (u2 + 1)
    assert count_parameters(model) == (cin_params + dnn_params + 1, vocab * d + vocab)  # + the linear bias
    cin_flops = 2 * d * (h1 * m * m + h2 * h1 * m) + 2 * (h1 + h2)
    dnn_flops = 2 * (m * d * u1 + u1 * u2 + u2)
    assert forward_flops(model, batch) == len(batch) * (cin_flops + dnn_flops)


def test_bars_frappe_config_has_bars_parameter_count(categorical_only, bars_frappe_vocab):
    # xDeepFM_frappe_x1_005_447fa536 logs 429,809 parameters (FuxiCTR 1.1: one row fewer per feature,
    # no bias in the linear part; ours has one).
    fmap, _ = categorical_only({name: size - 1 for name, size in bars_frappe_vocab.items()})
    model = XDeepFM(fmap, embedding_dim=10, cin_layer_units=(64,), dnn_hidden_units=(400, 400, 400),
                    dnn_dropout=0.2, batch_norm=True)
    assert sum(count_parameters(model)) == 429_809 + 1


def test_paper_table3_sizes_are_cin_only_with_fuxictr_defaults(categorical_only, bars_frappe_vocab):
    # The paper's Table 3 lists xDeepFM with 66,206 parameters on Frappe and 994,439 on MovieLens: exactly
    # linear part + CIN [16, 16, 16] without DNN at dim 10 on BARS's FuxiCTR 2.x vocabularies (+1: our bias).
    for vocab, paper_params in ((bars_frappe_vocab, 66_206),
                                ({"user_id": 16977, "item_id": 23606, "tag_id": 49659}, 994_439)):
        fmap, _ = categorical_only(vocab)
        model = XDeepFM(fmap, embedding_dim=10, cin_layer_units=(16, 16, 16), dnn_hidden_units=())
        assert sum(count_parameters(model)) == paper_params + 1
