"""The distributed track: zoo models with embedding tables sharded by TorchRec (Criteo TB scale).

    config.py      the run config (YAML), validated on load
    data.py        each rank's row groups of a split -> SparseBatch (dense values + KeyedJaggedTensor)
    model.py       a zoo model with its FeatureEmbedding tables moved into EmbeddingBagCollections
    sharding.py    planner, DistributedModelParallel, fused row-wise AdaGrad + Adam, warm-up
    checkpoint.py  torch.distributed.checkpoint save / resume
    train.py       the torchrun entry point: one pass, then an exact AUC on the eval split
"""
