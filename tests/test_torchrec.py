"""The pinned torchrec / fbgemm-gpu-cpu pair imports and trains with the pinned torch on CPU."""

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor


def test_embedding_bag_collection_trains():
    torch.manual_seed(0)
    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=8, num_embeddings=50, feature_names=[f"f{i}"])
              for i in range(2)]
    ebc = EmbeddingBagCollection(tables=tables)
    head = torch.nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*ebc.parameters(), *head.parameters()], lr=0.05)
    ids = torch.randint(0, 50, (2, 64))
    labels = (ids[0] % 2 == ids[1] % 2).float()  # an interaction of the two ids
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f0", "f1"], values=ids.flatten(), lengths=torch.ones(128, dtype=torch.int32))
    losses = []
    for _ in range(60):
        pooled = ebc(kjt)
        logits = head(torch.cat([pooled["f0"], pooled["f1"]], dim=1)).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert torch.ops.fbgemm.asynchronous_complete_cumsum(torch.tensor([1, 2, 3])).tolist() == [0, 1, 3, 6]
