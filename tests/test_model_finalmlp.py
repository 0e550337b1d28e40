import math

import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.flops import count_parameters
from model_zoo.finalmlp import FeatureSelectionGate, FinalMLP, MultiHeadBilinearFusion


def test_multi_head_bilinear_fusion_by_hand():
    fusion = MultiHeadBilinearFusion(width1=4, width2=2, num_heads=2)
    with torch.no_grad():
        fusion.linear1.weight.fill_(1.0)
        fusion.linear1.bias.fill_(0.5)
        fusion.linear2.weight.copy_(torch.tensor([[1.0, -1.0]]))
        fusion.bilinear.copy_(torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]]))  # W3_0 = [1, 0]^T, W3_1 = [0, 1]^T
    o1, o2 = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[5.0, 6.0]])
    # heads: ([1, 2], [5]) and ([3, 4], [6]): 1 * 5 + 4 * 6 = 29; linear parts 10 + 0.5 and 5 - 6.
    assert fusion(o1, o2).item() == pytest.approx(29 + 10.5 - 1)


def test_fusion_heads_must_divide_both_streams():
    with pytest.raises(CtrbenchError, match="model.num_heads"):
        MultiHeadBilinearFusion(width1=400, width2=100, num_heads=3)


def test_gate_by_hand_reads_only_its_context_features(tiny_fmap, tiny_batch):
    gate = FeatureSelectionGate(tiny_fmap, ("user", "price"), embedding_dim=2, hidden_units=(), gated_width=3)
    assert gate.context.field_names == ["price", "user"]
    with torch.no_grad():
        gate.mlp[0].weight.zero_()
        gate.mlp[0].bias.copy_(torch.tensor([0.0, math.log(3.0), -math.log(3.0)]))
    flat = torch.ones(len(tiny_batch), 3)
    # 2 * sigmoid([0, ln 3, -ln 3]) = [1, 1.5, 0.5]
    assert torch.allclose(gate(tiny_batch, flat), torch.tensor([1.0, 1.5, 0.5]).expand(64, 3))
    with torch.no_grad():
        gate.mlp[0].weight.normal_()
    other = tiny_batch.take(torch.arange(64))
    other.categorical[:, 1] = 1  # the item column: not a context feature
    assert torch.equal(gate(tiny_batch, flat), gate(other, flat))


def test_context_embedding_matches_the_full_embedding_fields(tiny_fmap, tiny_batch):
    torch.manual_seed(0)
    full = FeatureEmbedding(tiny_fmap, embedding_dim=3)
    names = ["age", "item", "video", "clicked_items", "watched_videos"]
    context = FeatureEmbedding(tiny_fmap, embedding_dim=3, features=names)
    assert context.field_names == names and context.num_fields == 5
    assert set(context.offset_of) == {"item"}  # the sequence shares item's table, nothing else is kept
    with torch.no_grad():
        rows = slice(full.offset_of["item"], full.offset_of["item"] + tiny_fmap.feature("item").vocab_size)
        context.table.weight.copy_(full.table.weight[rows])
        context.numeric_weight.copy_(full.numeric_weight[1:2])
        context.projections["video"].weight.copy_(full.projections["video"].weight)
    expected = full(tiny_batch)[:, [full.field_index(name) for name in names]]
    assert torch.allclose(context(tiny_batch), expected)


def test_context_features_are_checked_against_the_feature_map(tiny_fmap):
    with pytest.raises(CtrbenchError, match=r"model.fs2_context: unknown feature 'itme' \(did you mean 'item'\?\)"):
        FinalMLP(tiny_fmap, fs1_context=("user",), fs2_context=("itme",))


def test_streams_read_the_gated_embedding(tiny_fmap, tiny_batch):
    model = FinalMLP(tiny_fmap, embedding_dim=4, mlp1_hidden_units=(8,), mlp2_hidden_units=(6,), num_heads=2,
                     fs1_context=("user",), fs2_context=("item", "clicked_items")).eval()
    flat = model.embedding(tiny_batch).flatten(1)
    gated1, gated2 = model.gates[0](tiny_batch, flat), model.gates[1](tiny_batch, flat)
    assert not torch.allclose(gated1, gated2)
    expected = model.fusion(model.mlp1(gated1), model.mlp2(gated2))
    assert torch.allclose(model(tiny_batch), expected, atol=1e-6)
    plain = FinalMLP(tiny_fmap, embedding_dim=4, use_feature_selection=False).eval()
    flat = plain.embedding(tiny_batch).flatten(1)
    assert plain.gates is None
    assert torch.allclose(plain(tiny_batch), plain.fusion(plain.mlp1(flat), plain.mlp2(flat)), atol=1e-6)


def test_bars_frappe_config_has_bars_parameter_count(categorical_only, bars_frappe_vocab):
    # FinalMLP_frappe_x1_004_e1ab402f logs 253,392 parameters; FuxiCTR's fusion has two biases, ours one.
    fmap, _ = categorical_only(bars_frappe_vocab)
    model = FinalMLP(fmap, embedding_dim=10, mlp1_hidden_units=(400,), mlp1_dropout=0.4, mlp1_batch_norm=True,
                     mlp2_hidden_units=(100,), mlp2_dropout=0.4, mlp2_batch_norm=True, fs_hidden_units=(400,),
                     fs1_context=("user",), fs2_context=("item",), num_heads=5)
    dense, embedding = count_parameters(model)
    assert embedding == (5399 + 956 + 4084) * 10  # the main table plus the two gates' context tables
    assert dense + embedding == 253_392 - 1


def test_bars_movielens_config_has_bars_and_paper_parameter_count(categorical_only):
    # FinalMLP_movielenslatest_x1_004_498f3e4f logs 1,040,902 parameters, the paper's Table 3 the same.
    fmap, _ = categorical_only({"user_id": 16977, "item_id": 23606, "tag_id": 49659})
    model = FinalMLP(fmap, embedding_dim=10, mlp1_hidden_units=(400,), mlp1_dropout=0.4, mlp1_batch_norm=True,
                     mlp2_hidden_units=(800,), mlp2_dropout=0.2, mlp2_batch_norm=True, fs_hidden_units=(800,),
                     num_heads=10)
    assert sum(count_parameters(model)) == 1_040_902 - 1
