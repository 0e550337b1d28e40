"""ctrbench.nn.flops against per-layer formulas derived by hand, on the tiny fixture (every feature type).

Counting rule (ctrbench/nn/flops.py): 2 FLOPs per multiply-add of a matrix product, 0 for lookups and
element-wise ops (activations, LayerNorm, softmax, pooling, concatenation).
"""

import pytest

from ctrbench.nn.flops import count_parameters, forward_flops
from model_zoo.dlrm import DLRM
from model_zoo.wukong import Wukong

D = 4  # embedding dim used throughout


def mlp(*widths: int) -> int:
    """A stack of Linear layers of these widths: 2 * in * out each (biases are adds, not counted)."""
    return sum(2 * a * b for a, b in zip(widths, widths[1:]))


# The fixture has 2 numeric features, categorical user and item, a pretrained feature `video` (3-dim
# frozen table) and two sequences: clicked_items (4 items of item's table) and watched_videos (3 items of
# video's table). Pretrained lookups are projected 3 -> d item by item, before pooling: 1 + 3 projections.
PRETRAINED = 4 * mlp(3, D)


@pytest.mark.parametrize("fm", ["full", "optimized", "attentive"])
def test_wukong_flops_match_formula(fm, tiny_fmap, tiny_batch):
    nf, nl, k = 3, 2, 2
    model = Wukong(tiny_fmap, embedding_dim=D, bottom_mlp_units=(8,), dense_embeddings=2,
                   important_features=("item", "clicked_items"), important_embeddings=2,
                   small_features=("user",), small_embedding_dim=2, small_group_embeddings=1,
                   num_layers=2, fmb_embeddings=nf, lcb_embeddings=nl, fm=fm, fm_rank=k, attention_mlp_units=(7,),
                   fmb_mlp_units=(6,), head_mlp_units=(5,))
    # Embedding layer: bottom MLP 2 -> 8 -> 2 embeddings of d; pretrained projections; the small group
    # (user's 2-dim embedding) through one Linear to 1 embedding of d. Tables: no FLOPs.
    embedding = mlp(2, 8, 2 * D) + PRETRAINED + mlp(2, 1 * D)
    # X0: 2 dense + video + watched_videos + 2 x (item, clicked_items) + 1 group = 9 embeddings.
    n0 = 2 + 2 + 2 * 2 + 1

    def layer(n: int) -> int:
        if fm == "full":
            interaction, fm_out = 2 * n * n * D, n * n  # X X^T: n x n dot products of length d
        else:
            interaction, fm_out = 2 * (2 * n * D * k), n * k  # X^T Y (d x k, sums over n), then X (X^T Y)
            if fm == "attentive":  # Y(X): W_A X (k x d, sums over n), then MLP_A: k*d -> 7 -> n*k
                interaction += 2 * k * n * D + mlp(k * D, 7, n * k)
        fmb = mlp(fm_out, 6, nf * D)  # FMB MLP to nF embeddings
        lcb = 2 * nl * n * D  # W_L X: nL x d, sums over n
        residual = 2 * (nf + nl) * n * D if n != nf + nl else 0  # projection only when n changes
        return interaction + fmb + lcb + residual

    head = mlp((nf + nl) * D, 5, 1)
    expected = embedding + layer(n0) + layer(nf + nl) + head
    assert forward_flops(model, tiny_batch) == expected * len(tiny_batch)


def test_wukong_parameter_counts_match_formula(tiny_fmap):
    model = Wukong(tiny_fmap, embedding_dim=D, bottom_mlp_units=(8,), num_layers=1, fmb_embeddings=3,
                   lcb_embeddings=2, fm="optimized", fm_rank=2, fmb_mlp_units=(6,), head_mlp_units=(5,))
    dense, embedding = count_parameters(model)
    assert embedding == (7 + 12) * D  # user and item tables; sequences share them, video is frozen
    n = 1 + 2 + 1 + 2  # dense, user, item, video, two sequences
    expected_dense = (
        (2 * 8 + 8) + (8 * D + D)  # bottom MLP
        + 3 * D  # video's projection 3 -> d, no bias (watched_videos shares it)
        + n * 2  # Y
        + 2 * n * 2  # LayerNorm over the n*k FM outputs
        + (n * 2 * 6 + 6) + (6 * 3 * D + 3 * D)  # FMB MLP
        + 2 * n  # W_L
        + 5 * n  # W_R (n = 6 -> 5)
        + 2 * D  # output LayerNorm over d
        + (5 * D * 5 + 5) + (5 + 1)  # head
    )
    assert dense == expected_dense


@pytest.mark.parametrize("interaction", ["dot", "cat"])
def test_dlrm_flops_match_formula(interaction, tiny_fmap, tiny_batch):
    model = DLRM(tiny_fmap, embedding_dim=D, bottom_mlp_units=(8,), top_mlp_units=(16,), interaction=interaction)
    fields = 1 + 2 + 1 + 2  # bottom-MLP output, user, item, video, two sequences
    embedding = mlp(2, 8, D) + PRETRAINED  # bottom MLP 2 -> 8 -> d
    if interaction == "dot":
        # the full Gram matrix X X^T is computed (F x F dot products of length d); the top MLP reads
        # its F(F-1)/2 upper-triangle entries and the dense embedding
        interaction_flops, top_input = 2 * fields * fields * D, fields * (fields - 1) // 2 + D
    else:
        interaction_flops, top_input = 0, fields * D
    expected = embedding + interaction_flops + mlp(top_input, 16, 1)
    assert forward_flops(model, tiny_batch) == expected * len(tiny_batch)
