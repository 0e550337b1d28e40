"""Part 4: samples/s and MFLOP/s against Wukong's size, the batch size and the number of features (ours
only), next to a matmul probe of the same process before and after."""

from __future__ import annotations

import sys
from typing import Any

import torch

from benchmarks.measure import Workers, matmul_peak_gflops, timed_steps
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap, FeatureSpec

# Table 5's Wukong ladder (l, nF = nL, k, MLP width; MLPs of 3 layers) scaled down: nF, nL and k / 4, MLP width / 32.
WUKONG_LADDER = ((2, 2, 6, 64), (4, 8, 6, 64), (8, 8, 6, 64), (8, 12, 12, 128), (8, 24, 24, 256), (8, 24, 24, 512),
                 (8, 48, 48, 512))


def categorical_map(num_features: int, vocab_size: int = 1000) -> FeatureMap:
    return FeatureMap(dataset="scaling", label="label", features=[
        FeatureSpec(name=f"c{j}", type="categorical", vocab_size=vocab_size, padding_idx=0, oov_idx=1)
        for j in range(num_features)])


def random_batch(fmap: FeatureMap, rows: int, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    vocab = fmap.features[0].vocab_size
    return Batch(categorical=torch.randint(0, vocab, (rows, len(fmap.features)), generator=generator, dtype=torch.int32),
                 pretrained=torch.zeros(rows, 0, dtype=torch.int32), numeric=torch.zeros(rows, 0), sequences={},
                 label=(torch.rand(rows, generator=generator) < 0.3).float())


def measure_training(model, batch: Batch, steps: int, warmup: int = 2) -> float:
    """Training samples/s of `model` on one pre-built batch, Adam."""
    from ctrbench.training.loop import TrainConfig, make_optimizer

    config = TrainConfig(batch_size=len(batch))
    wall, _ = timed_steps(model, make_optimizer(model, config), config, [batch] * (warmup + steps), warmup)
    return steps * len(batch) / wall


def scaling_point(num_features: int, batch_size: int, wukong: dict[str, Any], steps: int) -> dict[str, Any]:
    from ctrbench.nn.flops import forward_flops
    from model_zoo.wukong import Wukong

    fmap = categorical_map(num_features)
    batch = random_batch(fmap, batch_size)
    torch.manual_seed(0)
    model = Wukong(fmap, **wukong)
    train_mflop = 3 * forward_flops(model, batch) / batch_size / 1e6  # backward ~ 2x forward
    samples_per_second = measure_training(model, batch, steps)
    return {"features": num_features, "batch_size": batch_size, **wukong, "train_mflop_per_example": train_mflop,
            "samples_per_second": samples_per_second, "mflops": train_mflop * samples_per_second}


def wukong_size(layers: int, n: int, k: int, width: int) -> dict[str, Any]:
    return {"embedding_dim": 16, "num_layers": layers, "fmb_embeddings": n, "lcb_embeddings": n, "fm_rank": k,
            "fmb_mlp_units": [width] * 3, "head_mlp_units": [width] * 3}


def run(args, workers: Workers) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    peak_before = matmul_peak_gflops()
    rows = []
    for ladder_step in WUKONG_LADDER[:args.ladder_points]:
        rows.append({"sweep": "size", **scaling_point(39, args.scaling_batch, wukong_size(*ladder_step),
                                                      args.scaling_steps)})
        print(rows[-1], file=sys.stderr, flush=True)
    middle = wukong_size(*WUKONG_LADDER[3])
    for batch_size in args.batch_sizes:
        rows.append({"sweep": "batch", **scaling_point(39, batch_size, middle, args.scaling_steps)})
        print(rows[-1], file=sys.stderr, flush=True)
    for features in args.feature_counts:
        rows.append({"sweep": "features", **scaling_point(features, args.scaling_batch, middle, args.scaling_steps)})
        print(rows[-1], file=sys.stderr, flush=True)
    peak_after = matmul_peak_gflops()
    return {"rows": rows, "matmul_peak_gflops": [peak_before, peak_after], "matmul_size": [4096, 1024, 1024],
            "scaling_batch": args.scaling_batch}
