"""The embedded default dataset: seeded synthetic CTR data with planted interactions.

Eight categorical fields (Zipf-distributed values), three numeric fields and a click-history
sequence over the item field. Each categorical value v of field j has a first-order weight w_j[v]
and a latent vector U_j[v] in R^4. The click logit is a weighted sum of standardised terms:

    first order    sum_j w_j[c_j] + n0
    2nd order      <U0[c0], U1[c1]> + <U2[c2], U5[c5]> + <U3[c3], U7[c7]> + <U4[c4], U6[c6]>
    3rd order      sum_k U1[c1]_k U4[c4]_k U6[c6]_k
    numeric x cat  n1 <v, U2[c2]> + n1 n2
    sequence       <mean_t U7[h_t], U7[c7]>      (history items h against the target item c7)

and the label is a Bernoulli draw of sigmoid(logit). A linear model can only use the first-order
term, so interaction models separate from logistic regression by a wide AUC margin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ctrbench.data.features import OOV_INDEX, DatasetWriter, FeatureMap, FeatureSpec, to_parquet_frame

VOCAB_SIZES = (4, 8, 16, 32, 64, 128, 512, 1000)  # raw values of c0..c7; c7 is the item field
NUM_NUMERIC = 3
HISTORY_LEN = 8
LATENT_DIM = 4
TERM_WEIGHTS = {"first": 0.6, "pair": 1.2, "third": 0.8, "numeric": 0.6, "sequence": 0.8}
BIAS = -1.0
TRAIN_FRACTION, VALID_FRACTION = 0.8, 0.1  # the rest is test


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-12)


def generate(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Raw synthetic columns (0-based categorical values) and labels."""
    rng = np.random.default_rng(seed)
    cats, weights, latents = [], [], []
    for vocab in VOCAB_SIZES:
        popularity = 1.0 / np.arange(1, vocab + 1) ** 0.8
        cats.append(rng.choice(vocab, size=rows, p=popularity / popularity.sum()))
        weights.append(rng.normal(scale=1.0, size=vocab))
        latents.append(rng.normal(size=(vocab, LATENT_DIM)))
    numeric = rng.normal(size=(rows, NUM_NUMERIC)).astype(np.float32)
    item_popularity = 1.0 / np.arange(1, VOCAB_SIZES[7] + 1) ** 0.8
    history = rng.choice(VOCAB_SIZES[7], size=(rows, HISTORY_LEN), p=item_popularity / item_popularity.sum())
    lengths = rng.integers(1, HISTORY_LEN + 1, size=rows)
    mask = np.arange(HISTORY_LEN)[None, :] < lengths[:, None]

    u = [latents[j][cats[j]] for j in range(len(VOCAB_SIZES))]
    dot = lambda a, b: (a * b).sum(axis=1)  # noqa: E731
    history_mean = (latents[7][history] * mask[..., None]).sum(axis=1) / lengths[:, None]
    direction = rng.normal(size=LATENT_DIM)
    terms = {
        "first": sum(weights[j][cats[j]] for j in range(len(VOCAB_SIZES))) + numeric[:, 0],
        "pair": dot(u[0], u[1]) + dot(u[2], u[5]) + dot(u[3], u[7]) + dot(u[4], u[6]),
        "third": (u[1] * u[4] * u[6]).sum(axis=1),
        "numeric": numeric[:, 1] * (u[2] @ direction) + numeric[:, 1] * numeric[:, 2],
        "sequence": dot(history_mean, u[7]),
    }
    logit = BIAS + sum(TERM_WEIGHTS[name] * _standardize(value) for name, value in terms.items())
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    columns = {f"c{j}": cats[j] for j in range(len(VOCAB_SIZES))}
    columns.update({f"n{j}": numeric[:, j] for j in range(NUM_NUMERIC)})
    columns["history"] = np.where(mask, history, -1)  # -1 marks padding before re-indexing
    columns["label"] = labels
    return columns


def feature_specs() -> list[FeatureSpec]:
    specs = [FeatureSpec(name=f"n{j}", type="numeric", transform="standard normal") for j in range(NUM_NUMERIC)]
    specs += [FeatureSpec(name=f"c{j}", type="categorical", vocab_size=v + 2, padding_idx=0, oov_idx=OOV_INDEX)
              for j, v in enumerate(VOCAB_SIZES)]
    specs.append(FeatureSpec(name="history", type="sequence", vocab_size=VOCAB_SIZES[7] + 2, padding_idx=0,
                             oov_idx=OOV_INDEX, max_len=HISTORY_LEN, share_embedding="c7"))
    return specs


def write_synthetic(out_dir: str | Path, rows: int = 100_000, seed: int = 2024) -> FeatureMap:
    """Generate the dataset and write it in the processed-dataset contract (8:1:1 splits)."""
    raw = generate(rows, seed)
    frame = pl.DataFrame({
        **{name: values + 2 for name, values in raw.items() if name.startswith("c")},
        **{name: values for name, values in raw.items() if name.startswith("n")},
        "history": np.where(raw["history"] >= 0, raw["history"] + 2, 0),
        "label": raw["label"],
    })
    specs = feature_specs()
    train_rows, valid_rows = int(rows * TRAIN_FRACTION), int(rows * VALID_FRACTION)
    bounds = (0, train_rows, train_rows + valid_rows, rows)
    fmap = FeatureMap(dataset="synthetic", label="label", features=specs,
                      source={"generator": "ctrbench.data.synthetic", "rows": rows, "seed": seed})
    with DatasetWriter(out_dir) as writer:
        for split, start, stop in zip(("train", "valid", "test"), bounds[:-1], bounds[1:]):
            writer.write_split(split, to_parquet_frame(frame.slice(start, stop - start), "label", specs))
        return writer.commit(fmap)
