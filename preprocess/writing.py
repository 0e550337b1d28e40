"""Writing the processed dataset: vocabularies on train, encode, write atomically, record the sources.

`write_dataset` encodes a converter's `RawSplits` (see `preprocess.encoding`) and commits the splits and
the feature map through `ctrbench.data.features.DatasetWriter`; `write_categorical_dataset` does it for a
dataset whose features are all categorical.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import polars.selectors as cs
import pyarrow.parquet as pq

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import SPLITS, DatasetWriter, FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.encoding import Feature, encoding, fit_vocabularies
from preprocess.inputs import InputRows, describe_inputs, progress
from preprocess.readers import LABEL
from preprocess.rules import CategoricalRules
from preprocess.splits import RawSplits
from preprocess.vocabularies import write_pretrained_table


def write_dataset(out_dir: Path, dataset: str, release: str, raw: RawSplits, features: Sequence[Feature],
                  rules: Any, policy: BadRows, reference: tuple[str, dict[str, int]],
                  shuffle_seed: int | None = None) -> FeatureMap:
    """Encode `features` of the raw splits and write the processed dataset (atomically).

    Vocabularies are fitted on the train split (`fit_vocabularies`); each split is encoded and written
    by one streaming pass, pretrained tables through a memory map. The feature map's `source` records
    the release, each input's checksum and rows read and kept, the rules, the skipped bad rows and the
    converter's notes. The written split sizes are printed next to the `reference` release's (name,
    rows per split), e.g. BARS's. With `shuffle_seed` the train rows are written in a seeded random order
    (`DatasetWriter`).
    """
    frames = {split: frame.lazy() for split, frame in raw.frames.items()}
    counts = {path.name: InputRows(rows_read=kept + policy.skipped_in(path), rows_kept=kept)
              for path, kept in raw.rows_kept.items()}
    with progress(f"{dataset}: checksums of {len(raw.rows_kept)} input file(s)"):
        inputs = describe_inputs(list(raw.rows_kept), counts)
    source = {
        "release": release,
        "inputs": inputs,
        "rules": json.loads(json.dumps(dataclasses.asdict(rules), default=str)),  # dates as text
        "skipped_rows": policy.report(),
        **raw.notes,
    }
    with progress(f"{dataset}: fitting vocabularies on train"):
        vocabularies = fit_vocabularies(frames["train"], features)
    specs, columns, index_maps = encoding(features, vocabularies)
    with DatasetWriter(out_dir, shuffle_seed=shuffle_seed) as writer:
        for relative, mapping in index_maps.items():
            writer.write_array(relative, mapping)
        for feature in features:
            if feature.pretrained:
                with progress(f"{dataset}: aligning the pretrained vectors of {feature.name}"):
                    lacking = write_pretrained_table(writer.path(f"pretrained/{feature.name}.npy"),
                                                     vocabularies[feature.name], feature.pretrained)
                console.print(f"{dataset}: {lacking:,} of {len(vocabularies[feature.name].values):,} {feature.name} "
                              "values have no pretrained vector (zero rows)", highlight=False)
        written = {}  # split -> (file, rows)
        for split, frame in frames.items():
            relative = f"{split}/part-00000.parquet"
            with progress(f"{dataset}: encoding and writing the {split} split"):
                (frame.select(*columns, pl.col(LABEL).cast(pl.Float32)).unnest(cs.struct())
                 .select(*[spec.name for spec in specs if spec.column is None], LABEL)).sink_parquet(
                    writer.path(relative), compression="zstd", row_group_size=writer.row_group_rows,
                    engine="streaming")
            written[split] = relative, pq.read_metadata(writer.path(relative)).num_rows
            if written[split][1] == 0:
                raise CtrbenchError(f"{dataset}: the {split} split has no rows; are the raw files complete?")
        written.setdefault("valid", written["test"])  # validate on the test rows (`ValidationRule`)
        for split in SPLITS:
            writer.add_file(split, *written[split])
        fmap = writer.commit(FeatureMap(dataset=dataset, label=LABEL, features=specs, source=source))
    shown = lambda rows: " / ".join(f"{rows[split]:,}" for split in SPLITS)  # noqa: E731
    name, rows = reference
    ours = {split: info.rows for split, info in fmap.splits.items()}
    verdict = f"as in {name}" if ours == rows else f"{name} has {shown(rows)}"
    console.print(f"{dataset}: train / valid / test rows {shown(ours)}, {verdict}", highlight=False)
    return fmap


def write_categorical_dataset(out_dir: Path, dataset: str, release: str, raw: RawSplits, rules: CategoricalRules,
                              policy: BadRows, reference: tuple[str, dict[str, int]],
                              shuffle_seed: int | None = None) -> FeatureMap:
    """`write_dataset` for a dataset whose `rules.fields` are all categorical."""
    features = [Feature(name, "categorical", min_count=rules.min_count) for name in rules.fields]
    return write_dataset(out_dir, dataset, release, raw, features, rules, policy, reference, shuffle_seed)
