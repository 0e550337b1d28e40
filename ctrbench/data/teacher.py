"""The `teacher` dataset: Criteo-shaped rows labelled by a fixed random model, so the best achievable
LogLoss is known exactly (for the scaling study, `ctrbench scale`).

Rows have 13 numeric fields n0..n12 (standard normal) and 26 categorical fields c0..c25 whose vocabularies
grow geometrically from 8 to 200,000 values, drawn with Zipf-like popularity (exponent 1.1). The teacher
gives each categorical value v of field j a weight w_j[v] ~ N(0, 1) and a vector U_j[v] ~ N(0, I_8); a
numeric field i has a direction V_i ~ N(0, I_8), so its vector is z_i V_i, and a phase. With e_f the
vector of field f, the click logit is a weighted sum of standardised terms:

    first order     sum_j w_j[c_j] + sum_i sin(a_i z_i + b_i)
    2nd order       sum over 12 random field pairs (f, g):          <e_f, e_g>
    3rd order       sum over 8 random field triples (f, g, h):       sum_k e_f,k e_g,k e_h,k
    4th order       sum over 4 random field quadruples:              sum_k e_f,k e_g,k e_h,k e_l,k
    memorised       over 2 random categorical pairs (f, g): T[c_f, c_g], an independent N(0, 1) value per
                    value pair (full rank: no factorised model holds it exactly)

and the label is a Bernoulli draw of p = sigmoid(logit). It is no zoo architecture (no MLP, no cross or
attention layer, no stacked FM): multilinear terms of orders 1-4 over random field subsets, sinusoids and
a lookup table. The terms are standardised with means and deviations measured once on a reference sample
drawn from the seed, so the teacher does not depend on the number of rows generated. Because p is known
for every row, the Bayes LogLoss of a split (the mean binary entropy of its p) is the lowest LogLoss any
model can reach in expectation; the feature map records it per split, with the teacher's own AUC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ctrbench.data.features import OOV_INDEX, DatasetWriter, FeatureMap, FeatureSpec, to_parquet_frame

NUM_NUMERIC, NUM_CATEGORICAL, LATENT_DIM = 13, 26, 8
VOCAB_SIZES = tuple(int(v) for v in np.geomspace(8, 200_000, NUM_CATEGORICAL).round())
ZIPF = 1.1
ORDERS = {2: 12, 3: 8, 4: 4}  # interaction order -> number of random field subsets
MEMORISED_PAIRS = 2
TERM_WEIGHTS = {"first": 0.8, "order2": 1.0, "order3": 0.8, "order4": 0.6, "memorised": 0.5}
BIAS = -1.2
REFERENCE_ROWS = 100_000
TRAIN_FRACTION, VALID_FRACTION = 0.8, 0.1  # the rest is test
PROBABILITY_EPS = 1e-7  # as the LogLoss metric clips


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """-p log p - (1 - p) log(1 - p), with p clipped to [1e-7, 1 - 1e-7] as LogLoss clips."""
    p = np.clip(p.astype(np.float64), PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


@dataclass
class Teacher:
    """The fixed random model of the module docstring, drawn from a seed."""

    seed: int

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        fields = NUM_NUMERIC + NUM_CATEGORICAL
        self.weights = [rng.normal(size=v) for v in VOCAB_SIZES]
        self.vectors = [rng.normal(size=(v, LATENT_DIM)) for v in VOCAB_SIZES]
        self.directions = rng.normal(size=(NUM_NUMERIC, LATENT_DIM))
        self.frequency, self.phase = rng.uniform(0.5, 2.0, NUM_NUMERIC), rng.uniform(0, 2 * np.pi, NUM_NUMERIC)
        self.subsets = {order: [rng.choice(fields, size=order, replace=False) for _ in range(count)]
                        for order, count in ORDERS.items()}
        self.memorised = [rng.choice(np.arange(NUM_NUMERIC, fields), size=2, replace=False)
                          for _ in range(MEMORISED_PAIRS)]
        self.table_seed = int(rng.integers(2**31))
        reference = self.terms(*self.draw(REFERENCE_ROWS, np.random.default_rng([self.seed, 1])))
        self.location = {name: value.mean() for name, value in reference.items()}
        self.scale = {name: value.std() + 1e-12 for name, value in reference.items()}

    def draw(self, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Inputs: numeric [rows, 13] float32 and categorical [rows, 26] 0-based values."""
        numeric = rng.normal(size=(rows, NUM_NUMERIC)).astype(np.float32)
        categorical = np.empty((rows, NUM_CATEGORICAL), dtype=np.int64)
        for j, vocab in enumerate(VOCAB_SIZES):
            popularity = 1.0 / np.arange(1, vocab + 1) ** ZIPF
            categorical[:, j] = rng.choice(vocab, size=rows, p=popularity / popularity.sum())
        return numeric, categorical

    def _vectors(self, numeric: np.ndarray, categorical: np.ndarray) -> list[np.ndarray]:
        """e_f [rows, 8] for every field f: numeric fields first, then categorical."""
        return ([numeric[:, [i]].astype(np.float64) * self.directions[i] for i in range(NUM_NUMERIC)]
                + [self.vectors[j][categorical[:, j]] for j in range(NUM_CATEGORICAL)])

    def _table(self, pair: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """T[a, b]: an N(0, 1) value per value pair, from a hash of (pair, a, b) (no table is stored)."""
        key = (a.astype(np.uint64) * np.uint64(1_000_003) + b.astype(np.uint64)) ^ np.uint64(self.table_seed + pair)
        key = (key ^ (key >> np.uint64(31))) * np.uint64(0x9E3779B97F4A7C15)
        key ^= key >> np.uint64(29)
        uniform = ((key >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
        return np.sqrt(2.0) * _erfinv(2.0 * uniform - 1.0)

    def terms(self, numeric: np.ndarray, categorical: np.ndarray) -> dict[str, np.ndarray]:
        """The unstandardised terms of the logit, one value per row each."""
        e = self._vectors(numeric, categorical)
        first = sum(self.weights[j][categorical[:, j]] for j in range(NUM_CATEGORICAL))
        first = first + np.sin(numeric * self.frequency + self.phase).sum(axis=1)
        terms = {"first": first}
        for order, subsets in self.subsets.items():
            terms[f"order{order}"] = sum(np.prod([e[f] for f in subset], axis=0).sum(axis=1) for subset in subsets)
        terms["memorised"] = sum(self._table(k, categorical[:, f - NUM_NUMERIC], categorical[:, g - NUM_NUMERIC])
                                 for k, (f, g) in enumerate(self.memorised))
        return terms

    def probability(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        terms = self.terms(numeric, categorical)
        logit = BIAS + sum(TERM_WEIGHTS[name] * (value - self.location[name]) / self.scale[name]
                           for name, value in terms.items())
        return 1.0 / (1.0 + np.exp(-logit))


def _erfinv(y: np.ndarray) -> np.ndarray:
    from scipy.special import erfinv  # noqa: PLC0415 (scipy is only needed when generating)

    return erfinv(y)


def feature_specs() -> list[FeatureSpec]:
    specs = [FeatureSpec(name=f"n{i}", type="numeric", transform="standard normal") for i in range(NUM_NUMERIC)]
    specs += [FeatureSpec(name=f"c{j}", type="categorical", vocab_size=v + 2, padding_idx=0, oov_idx=OOV_INDEX)
              for j, v in enumerate(VOCAB_SIZES)]
    return specs


def auc_of(labels: np.ndarray, scores: np.ndarray) -> float:
    from ctrbench.core.stats import midranks  # noqa: PLC0415

    positive = labels.astype(bool)
    m, n = positive.sum(), (~positive).sum()
    return float((midranks(scores)[positive].sum() - m * (m + 1) / 2) / (m * n))


def write_teacher(out_dir: str | Path, rows: int = 1_000_000, seed: int = 2024, chunk_rows: int = 250_000) -> FeatureMap:
    """Generate `rows` rows (8:1:1 train/valid/test) in chunks and write the processed-dataset contract;
    the feature map's source records the teacher and each split's Bayes LogLoss and teacher AUC."""
    teacher = Teacher(seed)
    rng = np.random.default_rng([seed, 2])
    specs = feature_specs()
    train_rows, valid_rows = int(rows * TRAIN_FRACTION), int(rows * VALID_FRACTION)
    sizes = {"train": train_rows, "valid": valid_rows, "test": rows - train_rows - valid_rows}
    bayes = {}
    with DatasetWriter(out_dir) as writer:
        for split, size in sizes.items():
            frames, entropy, probabilities, labels = [], 0.0, [], []
            for start in range(0, size, chunk_rows):
                numeric, categorical = teacher.draw(min(chunk_rows, size - start), rng)
                p = teacher.probability(numeric, categorical)
                label = (rng.random(len(p)) < p).astype(np.float32)
                entropy += binary_entropy(p).sum()
                probabilities.append(p)
                labels.append(label)
                frames.append(pl.DataFrame({**{f"n{i}": numeric[:, i] for i in range(NUM_NUMERIC)},
                                            **{f"c{j}": categorical[:, j] + 2 for j in range(NUM_CATEGORICAL)},
                                            "label": label}))
            writer.write_split(split, to_parquet_frame(pl.concat(frames), "label", specs))
            bayes[split] = {"logloss": entropy / size,
                            "auc": auc_of(np.concatenate(labels), np.concatenate(probabilities)),
                            "ctr": float(np.concatenate(labels).mean())}
        fmap = FeatureMap(dataset="teacher", label="label", features=specs,
                          source={"generator": "ctrbench.data.teacher", "rows": rows, "seed": seed, "bayes": bayes})
        return writer.commit(fmap)
