import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.flops import count_parameters
from model_zoo.afn_plus import AFNPlus, LogarithmicTransformation

BARS_FRAPPE_VOCAB = [5371] + [2] * 9  # 5,389 embedding rows over 10 fields, as in BARS's Frappe_x1 logs


def log_layer(weights: list[list[float]], clamp_min: float = 1e-5) -> LogarithmicTransformation:
    """A layer in eval mode whose BatchNorms are the identity (running mean 0, running variance 1 - eps)."""
    neurons, fields = len(weights), len(weights[0])
    layer = LogarithmicTransformation(fields, neurons, clamp_min).eval()
    with torch.no_grad():
        layer.weights.weight.copy_(torch.tensor(weights))
        for norm in (layer.log_batch_norm, layer.exp_batch_norm):
            norm.running_var.fill_(1 - norm.eps)
    return layer


def test_log_neurons_by_hand():
    # y_j = prod_i |e_i|^{w_ji}: e1 = [2, 3], e2 = [-4, 0.5]; neuron 1 = e1 * e2^2, neuron 2 = e2 / e1
    x = torch.tensor([[[2.0, 3.0], [-4.0, 0.5]]])
    y = log_layer([[1.0, 2.0], [-1.0, 1.0]])(x)
    assert torch.allclose(y, torch.tensor([[[32.0, 0.75], [2.0, 1 / 6]]]), rtol=1e-5)


@pytest.mark.parametrize("clamp_min", [1e-5, 1e-7])
def test_zero_embeddings_are_clamped_before_the_log(clamp_min):
    x = torch.tensor([[[2.0, 3.0], [0.0, 0.5]]])
    y = log_layer([[1.0, 2.0]], clamp_min)(x)
    assert torch.allclose(y, torch.tensor([[[2 * clamp_min ** 2, 0.75]]]), rtol=1e-4)


def test_log_neurons_run_in_fp32_under_autocast():
    torch.manual_seed(0)
    layer = LogarithmicTransformation(num_fields=3, num_neurons=4).eval()
    x = (torch.rand(16, 3, 5) + 0.5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    # Without the fp32 guard the Linear and the exp would run in bfloat16 (about 1e-2 off here).
    assert y.dtype == torch.float32
    assert torch.allclose(y, layer(x.float()))


def test_neuron_batch_norm_on_rows_equals_batch_norm_on_the_neuron_layout():
    # The layer normalises [B * d, N] rows; FuxiCTR normalises the [B, N, d] tensor. Same statistics per
    # neuron (over batch and d): outputs, input gradients and running statistics agree.
    torch.manual_seed(0)
    layer = LogarithmicTransformation(num_fields=3, num_neurons=5)
    reference = torch.nn.BatchNorm1d(5)
    x = torch.rand(64, 3, 4) + 0.5

    def neuron_layout() -> torch.Tensor:  # exp(W ln|x|) as [B, N, d], before the neurons' BatchNorm
        with torch.no_grad():
            logs = layer.log_batch_norm(torch.log(x.abs().clamp(min=layer.clamp_min)))
            return torch.exp(layer.weights(logs.transpose(1, 2))).transpose(1, 2)

    neurons = neuron_layout()  # before the layer's call: its log BatchNorm updates running statistics
    y = layer(x)
    expected = reference(neurons)
    assert y.shape == (64, 5, 4)
    assert torch.allclose(y, expected, atol=1e-5)
    assert torch.allclose(layer.exp_batch_norm.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(layer.exp_batch_norm.running_var, reference.running_var, rtol=1e-5)
    upstream = torch.randn(64, 5, 4)
    (y * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert torch.allclose(layer.exp_batch_norm.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-5)
    layer.eval(), reference.eval()
    assert torch.allclose(layer(x), reference(neuron_layout()), atol=1e-5)


def test_ensemble_has_its_own_embedding_and_combines_two_logits(tiny_fmap, tiny_batch):
    torch.manual_seed(0)
    model = AFNPlus(tiny_fmap, embedding_dim=4, logarithmic_neurons=6, afn_hidden_units=(8,), dnn_hidden_units=(8,))
    assert model.embedding is not model.ensemble_embedding
    assert not torch.equal(model.embedding.table.weight, model.ensemble_embedding.table.weight)
    model.eval()
    with torch.no_grad():
        afn = model.afn_mlp(model.log_neurons(model.embedding(tiny_batch)).flatten(1))
        dnn = model.dnn(model.ensemble_embedding(tiny_batch).flatten(1))
        w, b = model.ensemble.weight[0], model.ensemble.bias
        assert torch.allclose(model(tiny_batch), (w[0] * afn + w[1] * dnn + b).squeeze(-1))
    model.train()
    model(tiny_batch).sum().backward()
    assert model.embedding.table.weight.grad.abs().sum() > 0
    assert model.ensemble_embedding.table.weight.grad.abs().sum() > 0


def test_without_the_ensemble_it_is_plain_afn(tiny_fmap, tiny_batch):
    model = AFNPlus(tiny_fmap, embedding_dim=4, logarithmic_neurons=6, ensemble_dnn=False).eval()
    assert model.ensemble_embedding is None
    with torch.no_grad():
        afn = model.afn_mlp(model.log_neurons(model.embedding(tiny_batch)).flatten(1)).squeeze(-1)
        assert torch.equal(model(tiny_batch), afn)


def test_bars_frappe_config_has_bars_parameter_count(categorical_dataset):
    fmap, _ = categorical_dataset(BARS_FRAPPE_VOCAB)
    # AFN_frappe_x1_004_d2ea60c3: "Total number of parameters: 4482205." (two embedding tables)
    model = AFNPlus(fmap, embedding_dim=10, logarithmic_neurons=1000, afn_hidden_units=(400,), afn_dropout=0.4,
                    dnn_hidden_units=(400, 400, 400), dnn_dropout=0.2)
    assert sum(count_parameters(model)) == 4482205


def test_bad_options_name_the_parameter(categorical_dataset):
    fmap, _ = categorical_dataset([5, 5])
    with pytest.raises(CtrbenchError, match="log_clamp_min"):
        AFNPlus(fmap, log_clamp_min=0.0)
