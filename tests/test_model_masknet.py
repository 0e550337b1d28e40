import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.flops import count_parameters
from model_zoo.masknet import FieldLayerNorm, MaskBlock, MaskNet


def _hand_block(layer_norm: bool) -> MaskBlock:
    block = MaskBlock(embedding_width=2, hidden_width=2, output_width=2, reduction_ratio=1.0, layer_norm=layer_norm)
    aggregation, projection = block.mask[0], block.mask[2]
    with torch.no_grad():
        aggregation.weight.copy_(torch.eye(2))
        aggregation.bias.copy_(torch.tensor([0.0, -10.0]))
        projection.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        projection.bias.copy_(torch.tensor([0.0, 0.5]))
        block.hidden.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    return block


V_EMB = torch.tensor([[1.0, 2.0]])
V_HIDDEN = torch.tensor([[3.0, -1.0]])


def test_instance_guided_mask_by_hand():
    block = _hand_block(layer_norm=True)
    # ReLU(I [1, 2] + [0, -10]) = [1, 0]; mask = [[2, 0], [1, 1]] [1, 0] + [0, 0.5] = [2, 1.5].
    assert torch.allclose(block.mask(V_EMB), torch.tensor([[2.0, 1.5]]))


def test_mask_block_by_hand():
    # masked input [3, -1] * [2, 1.5] = [6, -1.5]; W_h -> [6 - 3, -1.5] = [3, -1.5].
    assert torch.allclose(_hand_block(layer_norm=False)(V_EMB, V_HIDDEN), torch.tensor([[3.0, 0.0]]))
    # LN([3, -1.5]) = [1, -1] (mean 0.75, std 2.25), then ReLU.
    assert torch.allclose(_hand_block(layer_norm=True)(V_EMB, V_HIDDEN), torch.tensor([[1.0, 0.0]]), atol=1e-4)


def test_aggregation_layer_is_reduction_ratio_times_wider():
    block = MaskBlock(embedding_width=30, hidden_width=400, output_width=400, reduction_ratio=4)
    assert (block.mask[0].in_features, block.mask[0].out_features, block.mask[2].out_features) == (30, 1600, 400)
    with pytest.raises(CtrbenchError, match="reduction_ratio"):
        MaskBlock(embedding_width=30, hidden_width=4, output_width=4, reduction_ratio=0.1)


def test_field_layer_norm_normalises_each_field_with_its_own_gain():
    norm = FieldLayerNorm(num_fields=2, dim=2)
    with torch.no_grad():
        norm.weight[1] = 2.0
        norm.bias[1] = 0.5
    out = norm(torch.tensor([[[1.0, 3.0], [2.0, 6.0]]]))
    assert torch.allclose(out, torch.tensor([[[-1.0, 1.0], [-1.5, 2.5]]]), atol=1e-4)


def test_serial_blocks_chain_and_every_mask_reads_the_embedding(tiny_fmap, tiny_batch):
    model = MaskNet(tiny_fmap, embedding_dim=4, structure="serial", serial_block_units=(6, 5)).eval()
    x0 = model.embedding(tiny_batch)
    v_emb = x0.flatten(1)
    first = model.blocks[0](v_emb, model.embedding_norm(x0).flatten(1))
    expected = model.head(model.blocks[1](v_emb, first)).squeeze(-1)
    assert torch.allclose(model(tiny_batch), expected, atol=1e-6)


def test_parallel_blocks_all_mask_the_normalised_embedding(tiny_fmap, tiny_batch):
    model = MaskNet(tiny_fmap, embedding_dim=4, structure="parallel", parallel_num_blocks=3, parallel_block_dim=5,
                    parallel_mlp_units=(7,), embedding_layer_norm=False).eval()
    v_emb = model.embedding(tiny_batch).flatten(1)
    blocks = torch.cat([block(v_emb, v_emb) for block in model.blocks], dim=1)
    assert blocks.shape == (64, 15)
    assert torch.allclose(model(tiny_batch), model.head(blocks).squeeze(-1), atol=1e-6)


def test_bad_structure_is_one_clear_error(tiny_fmap):
    with pytest.raises(CtrbenchError, match="model.structure"):
        MaskNet(tiny_fmap, structure="stacked")


def test_bars_configs_have_bars_parameter_counts(categorical_only, bars_frappe_vocab):
    # MaskNet_frappe_x1_028_015da53e logs 571,691 parameters (FuxiCTR 1.2: one row fewer per feature).
    fmap, _ = categorical_only({name: size - 1 for name, size in bars_frappe_vocab.items()})
    parallel = MaskNet(fmap, embedding_dim=10, structure="parallel", parallel_num_blocks=3, parallel_block_dim=50,
                       parallel_mlp_units=(400, 400, 400), reduction_ratio=2, dropout=0.1, embedding_layer_norm=False)
    assert sum(count_parameters(parallel)) == 571_691
    # MaskNet_movielenslatest_x1_010_13a8d29c logs 2,624,541 (vocabularies 16976 + 23605 + 49658).
    fmap, _ = categorical_only({"user_id": 16976, "item_id": 23605, "tag_id": 49658})
    serial = MaskNet(fmap, embedding_dim=10, structure="serial", serial_block_units=(400, 400, 400),
                     reduction_ratio=4, dropout=0.5, embedding_layer_norm=False)
    assert sum(count_parameters(serial)) == 2_624_541
