import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.embedding import FeatureEmbedding


def test_field_layout_and_shapes(tiny_fmap, tiny_batch):
    layer = FeatureEmbedding(tiny_fmap, embedding_dim=5)
    x0 = layer(tiny_batch)
    assert x0.shape == (64, 7, 5)
    assert layer.field_names == ["price", "age", "user", "item", "video", "clicked_items", "watched_videos"]
    assert layer.field_index("item") == 3


def test_numeric_scaled_and_categorical_by_hand(tiny_fmap, tiny_batch):
    layer = FeatureEmbedding(tiny_fmap, embedding_dim=5)
    x0 = layer(tiny_batch)
    assert torch.allclose(x0[:, 1], tiny_batch.numeric[:, 1:2] * layer.numeric_weight[1])
    item_rows = tiny_batch.categorical[:, 1].long() + layer.offset_of["item"]
    assert torch.equal(x0[:, 3], layer.table.weight[item_rows])


def test_sequence_mean_pooling_skips_padding(tiny_fmap, tiny_batch):
    layer = FeatureEmbedding(tiny_fmap, embedding_dim=5)
    x0 = layer(tiny_batch)
    for row in range(5):
        items = [i for i in tiny_batch.sequences["clicked_items"][row].tolist() if i != 0]
        expected = layer.table.weight[[i + layer.offset_of["item"] for i in items]].mean(0) if items else torch.zeros(5)
        assert torch.allclose(x0[row, 5], expected, atol=1e-7)


def test_pretrained_table_is_frozen_and_projected(tiny_fmap, tiny_batch):
    layer = FeatureEmbedding(tiny_fmap, embedding_dim=5)
    x0 = layer(tiny_batch)
    frozen = layer.frozen_video
    assert not any(p is frozen for p in layer.parameters())
    expected = frozen[tiny_batch.pretrained[:, 0].long()] @ layer.projections["video"].weight.T
    assert torch.allclose(x0[:, 4], expected)
    x0.sum().backward()
    assert layer.projections["video"].weight.grad is not None


def test_numeric_mlp_mode(tiny_fmap, tiny_batch):
    layer = FeatureEmbedding(tiny_fmap, embedding_dim=4, numeric_mode="mlp", numeric_mlp_units=[8], numeric_fields=3)
    assert layer(tiny_batch).shape == (64, 3 + 5, 4)
    assert layer.field_names[:3] == ["numeric_0", "numeric_1", "numeric_2"]
    mlp_params = set(map(id, layer.numeric_mlp.parameters()))
    assert not mlp_params & set(map(id, layer.regularized_parameters()))


def test_gradients_reach_only_looked_up_rows(tiny_fmap, tiny_batch):
    layer = FeatureEmbedding(tiny_fmap, embedding_dim=3)
    layer(tiny_batch.slice(0, 1))[:, 2].sum().backward()  # the "user" field of one row
    touched = layer.table.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert touched == [tiny_batch.categorical[0, 0].item() + layer.offset_of["user"]]


def test_feature_subset_embeds_only_those_features(tiny_fmap, tiny_batch):
    full = FeatureEmbedding(tiny_fmap, embedding_dim=5)
    part = FeatureEmbedding(tiny_fmap, embedding_dim=5, features=["age", "item", "clicked_items", "video"])
    assert part.field_names == ["age", "item", "video", "clicked_items"]
    assert part.table.num_embeddings == 12  # item's rows only; clicked_items shares them
    part.load_state_dict({**full.state_dict(), "numeric_weight": full.numeric_weight[1:],
                          "table.weight": full.table.weight[full.offset_of["item"]:]})
    assert torch.equal(part(tiny_batch), full(tiny_batch)[:, [1, 3, 4, 5]])


def test_feature_subset_brings_shared_tables_along(tiny_fmap, tiny_batch):
    part = FeatureEmbedding(tiny_fmap, embedding_dim=5, features=["clicked_items"])
    assert part.field_names == ["clicked_items"] and part.table.num_embeddings == 12  # item's table, no item field
    assert part(tiny_batch).shape == (64, 1, 5)
    with pytest.raises(CtrbenchError, match="unknown feature 'itme' \\(did you mean 'item'\\?\\)"):
        FeatureEmbedding(tiny_fmap, embedding_dim=5, features=["itme"])
