import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.flops import count_parameters, forward_flops
from model_zoo.dcnv2 import DCNv2, CrossLayer, MixtureCrossLayer

# BARS Frappe_x1: 10 categorical fields sharing 5,389 embedding rows (FuxiCTR's vocabulary, padding and
# OOV included), so that a model's total matches the "Total number of parameters" of BARS's logs.
BARS_FRAPPE_VOCAB = [5371] + [2] * 9


def test_cross_layer_by_hand():
    layer = CrossLayer(3)
    with torch.no_grad():
        layer.project.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
        layer.project.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    x0 = torch.tensor([[1.0, 2.0, -1.0]])
    x1 = torch.tensor([[0.0, 1.0, 3.0]])
    # W x0 + b = [-0.5, 1, 2]; x0 * that + x0 = [-0.5, 2, -2] + [1, 2, -1]
    assert torch.equal(layer(x0, x0), torch.tensor([[0.5, 4.0, -3.0]]))
    # W x1 + b = [6.5, 0, 4]; x0 * that + x1 = [6.5, 0, -4] + [0, 1, 3]
    assert torch.equal(layer(x0, x1), torch.tensor([[6.5, 1.0, -1.0]]))


def test_low_rank_layer_is_the_full_layer_with_w_equal_u_v_transposed():
    low, full = CrossLayer(3, rank=1), CrossLayer(3)
    u, v = torch.tensor([[1.0], [2.0], [-1.0]]), torch.tensor([[0.5, 0.0, 1.0]])
    with torch.no_grad():
        low.project[0].weight.copy_(v)  # V^T
        low.project[1].weight.copy_(u)
        low.project[1].bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
        full.project.weight.copy_(u @ v)
        full.project.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x0, x1 = torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    # V^T x1 = 1; U * 1 + b = [1.1, 2.2, -0.7]; x0 * that + x1
    assert torch.allclose(low(x0, x1), torch.tensor([[3.1, -3.4, -2.1]]))
    assert torch.allclose(low(x0, x1), full(x0, x1))


def test_mixture_layer_follows_the_expert_formula():
    torch.manual_seed(0)
    layer = MixtureCrossLayer(dim=5, rank=2, num_experts=3)
    with torch.no_grad():
        layer.bias.normal_()
    x0, x = torch.randn(4, 5), torch.randn(4, 5)
    gates = torch.softmax(x @ layer.gate.weight.T, dim=1)
    expected = x.clone()
    for k in range(3):
        low = torch.tanh(layer.C[k] @ torch.tanh(layer.V[k].T @ x.T))  # [r, B]
        expert = x0 * ((layer.U[k] @ low).T + layer.bias)
        expected += gates[:, k:k + 1] * expert
    assert torch.allclose(layer(x0, x), expected, atol=1e-6)


@pytest.mark.parametrize("structure, head_inputs", [
    ("crossnet_only", 40), ("stacked", 8), ("parallel", 40 + 16), ("stacked_parallel", 8 + 16)])
@pytest.mark.parametrize("cross_network", ["full", "low_rank", "mixture"])
def test_structures_wire_cross_and_dnn_outputs_into_the_head(categorical_dataset, structure, head_inputs, cross_network):
    fmap, batch = categorical_dataset([5, 6, 7, 8, 9], rows=16)
    model = DCNv2(fmap, embedding_dim=8, model_structure=structure, cross_network=cross_network, low_rank=3,
                  num_experts=2, stacked_dnn_hidden_units=(12, 8), parallel_dnn_hidden_units=(16,))
    assert model.output.in_features == head_inputs
    logits = model(batch)
    assert logits.shape == (16,)
    logits.sum().backward()
    assert model.embedding.table.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.cross_layers.parameters())


def test_flops_and_parameters_match_the_formulas(categorical_dataset):
    fields, d, layers, units, rank, experts = 6, 4, 3, (32, 16), 5, 2
    fmap, batch = categorical_dataset([10] * fields, rows=7)
    D = fields * d
    mlp_params = D * 32 + 32 + 32 * 16 + 16
    head_flops, head_params = 2 * (D + 16), D + 16 + 1
    dnn_flops = 2 * (D * 32 + 32 * 16)
    per_layer = {  # (FLOPs per example, parameters) of one cross layer; matrix products only, 2 per multiply-add
        "full": (2 * D * D, D * D + D),
        "low_rank": (2 * 2 * D * rank, 2 * D * rank + D),
        # V, C, U products per expert, the gate (D x K) and the gate-weighted sum over experts
        "mixture": (2 * experts * (2 * D * rank + rank * rank) + 2 * D * experts + 2 * experts * D,
                    experts * (2 * D * rank + rank * rank) + D + D * experts),
    }
    for cross_network, (layer_flops, layer_params) in per_layer.items():
        model = DCNv2(fmap, embedding_dim=d, num_cross_layers=layers, cross_network=cross_network, low_rank=rank,
                      num_experts=experts, parallel_dnn_hidden_units=units)
        assert forward_flops(model, batch) == len(batch) * (layers * layer_flops + dnn_flops + head_flops), cross_network
        assert count_parameters(model) == (layers * layer_params + mlp_params + head_params, 10 * fields * d)


def test_bars_frappe_config_has_bars_parameter_count(categorical_dataset):
    fmap, _ = categorical_dataset(BARS_FRAPPE_VOCAB)
    # DCNv2_frappe_x1_007_c207b717: "Total number of parameters: 458391."
    model = DCNv2(fmap, embedding_dim=10, model_structure="parallel", num_cross_layers=4,
                  parallel_dnn_hidden_units=(400, 400, 400), net_dropout=0.4, batch_norm=True)
    assert sum(count_parameters(model)) == 458391


def test_bad_options_name_the_parameter(categorical_dataset):
    fmap, _ = categorical_dataset([5, 5])
    with pytest.raises(CtrbenchError, match="cross_network"):
        DCNv2(fmap, cross_network="diagonal")
    with pytest.raises(CtrbenchError, match="model_structure"):
        DCNv2(fmap, model_structure="serial")
    with pytest.raises(CtrbenchError, match="num_cross_layers"):
        DCNv2(fmap, num_cross_layers=0)
