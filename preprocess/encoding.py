"""How features are encoded (`Feature`, `write_dataset`), following FuxiCTR's rules for the BARS datasets:

* Every vocabulary is fitted on the train split only. A sequence with `share_embedding` uses the vocabulary
  of the feature it names, fitted on that feature's column and on the tokens of every sequence sharing it;
  a value is kept when one of those columns alone holds it `min_count` times (FuxiCTR merges the kept
  values of each column the same way).
* A pretrained_embedding feature's vocabulary is extended by every key of its pretrained table, so that
  items first seen in valid/test still get their vector (FuxiCTR's `expand_vocab`). Its table is written
  aligned to the vocabulary (row = index); padding, OOV and values the table lacks get zero rows.
* Sequences are `^`-joined strings or list columns, oldest item first. Empty tokens are dropped; a
  sequence longer than `max_len` keeps its most recent (last) or oldest (first) `max_len` items
  (`keep`); it is then padded with 0 at the front to exactly `max_len` (FuxiCTR's `padding: pre`), so
  the most recent item is always last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import OOV_INDEX, PADDING_INDEX, FeatureSpec, FeatureType
from preprocess.histories import window_rows
from preprocess.rules import Keep
from preprocess.vocabularies import MAX_COUNTED_ID, PretrainedTable, Vocabulary, integer_ids

SEQUENCE_SEPARATOR = "^"  # joins the items of a sequence in the BARS CSV files


@dataclass(frozen=True)
class Feature:
    """How one processed feature is made from a column of the raw splits (see the module docstring).

    categorical           values -> vocabulary indices (`min_count` on train)
    pretrained_embedding  the same, plus the vectors of `pretrained` (tables with distinct keys)
    numeric               numbers -> float32; `transform` records what the converter did to them
    sequence              `^`-joined strings or lists -> `max_len` indices, truncated keeping `keep`,
                          front-padded with 0; `share_embedding` names the feature whose vocabulary
                          and table it uses, else it has its own vocabulary (`min_count`)
    """

    name: str
    type: FeatureType
    column: str | None = None  # the raw column, if not `name`
    min_count: int = 1
    max_len: int | None = None
    keep: Keep = "recent"
    share_embedding: str | None = None
    pretrained: tuple[PretrainedTable, ...] = ()
    transform: str | None = None

    @property
    def source(self) -> str:
        return self.column or self.name


def count_values(train: pl.LazyFrame, queries: Sequence[tuple[str, bool]]) -> dict[tuple[str, bool], pl.DataFrame]:
    """(`value`, `count`) of each queried column's values (or, for `(column, True)`, a sequence column's items)
    over the train rows, nulls and empty items left out. The `^`-joined histories are counted together, in one
    pass over the rows (`count_joined_ids`); other columns one at a time by a streaming group_by."""
    schema = train.collect_schema()
    joined = list(dict.fromkeys(column for column, sequence in queries if sequence and schema[column] == pl.String))
    counts = {(column, True): frame for column, frame in count_joined_ids(train, joined).items()}
    for column, sequence in queries:
        if (column, sequence) not in counts:
            values = pl.col(column).explode() if sequence else pl.col(column)
            counts[column, sequence] = (train.select(values.alias("value")).drop_nulls().group_by("value")
                                        .agg(pl.len().alias("count")).collect(engine="streaming"))
    return counts


def count_joined_ids(train: pl.LazyFrame, columns: Sequence[str], rows_per_batch: int = 50_000) -> dict[str, pl.DataFrame]:
    """`count_values` of `^`-joined text columns, read together batch by batch. Their items that are ids
    (`integer_ids`) are counted in an array per column (np.bincount): a group_by over a million distinct
    texts cost more than splitting the histories. Other items go through polars's value_counts. An id
    counted by number is written back as its canonical text, the only form `integer_ids` accepts: the same
    text."""
    by_id = {column: np.zeros(0, dtype=np.int64) for column in columns}
    others: dict[str, list[pl.DataFrame]] = {column: [] for column in columns}
    batches = train.select(columns).collect_batches(chunk_size=rows_per_batch) if columns else ()
    for batch in batches:
        for column in columns:
            items, _ = sequence_items(batch[column])
            ids = integer_ids(items)
            counted = (ids >= 0) & (ids < MAX_COUNTED_ID)
            every = bool(counted.all())  # the usual case: no copy of the ids, no other items
            found = np.bincount(ids if every else ids[counted])
            if len(found) > len(by_id[column]):
                by_id[column] = np.concatenate([by_id[column], np.zeros(len(found) - len(by_id[column]), np.int64)])
            by_id[column][:len(found)] += found
            if not every:
                others[column].append(items.filter(pl.Series(~counted)).rename("value").value_counts(name="count"))
    counts = {}
    for column in columns:
        present = np.flatnonzero(by_id[column])
        frames = [pl.DataFrame({"value": pl.Series(present).cast(pl.String), "count": by_id[column][present]}),
                  *others[column]]
        frame = pl.concat([frame.cast({"count": pl.get_index_type()}) for frame in frames])
        counts[column] = frame.group_by("value").agg(pl.col("count").sum()) if others[column] else frame
    return counts


def sequence_items(column: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """A batch of a sequence column (`^`-joined text or lists) as its items, oldest first, in one flat series,
    and each row's number of items. Null rows have none; empty text items ("", "1^^2", "^1") are dropped."""
    lists = column.str.split(SEQUENCE_SEPARATOR) if column.dtype == pl.String else column
    items = lists.explode(empty_as_null=False, keep_nulls=False)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    if column.dtype == pl.String:
        empty = items.str.len_bytes().to_numpy() == 0
        if empty.any():
            rows = np.repeat(np.arange(len(column)), lengths)[~empty]
            lengths = np.bincount(rows, minlength=len(column))
            items = items.filter(pl.Series(~empty))
    return items, lengths


def encode_sequence(column: pl.Series, vocabularies: Sequence[Vocabulary], max_len: int,
                    keep: Keep) -> list[pl.Series]:
    """A batch of a sequence column (`^`-joined text or lists) -> for each vocabulary, exactly `max_len`
    int32 indices per row: truncated keeping the most recent (last) or the oldest (first) `max_len`
    items, then padded with 0 at the front. The column is split once, however many vocabularies encode
    it; the items of all rows are encoded at once (`Vocabulary.lookup`) and placed in a matrix by one
    boolean mask (row i's last `kept[i]` cells, filled in row-major order: the rows' items in order)."""
    items, lengths = sequence_items(column)
    kept = np.minimum(lengths, max_len)
    if (kept < lengths).any():
        first = np.cumsum(lengths) - lengths + (lengths - kept if keep == "recent" else 0)
        items = items.gather(window_rows(first, kept)[1])
    ids = integer_ids(items) if any(v.integer_table is not None for v in vocabularies) else None
    filled = np.arange(max_len) >= (max_len - kept)[:, None]
    encoded = []
    for vocabulary in vocabularies:
        matrix = np.full((len(column), max_len), PADDING_INDEX, dtype=np.int32)
        matrix[filled] = vocabulary.lookup(items, ids)
        encoded.append(pl.Series(column.name, matrix).cast(pl.List(pl.Int32)))
    return encoded


def encode_batches(column: pl.Expr, dtype: pl.DataType, encode: Callable[[pl.Series], pl.Series]) -> pl.Expr:
    """`encode` applied to each batch of a column, in a form polars's streaming engine runs batch by batch
    (marked elementwise: each row's result depends on that row only)."""
    return column.map_batches(encode, return_dtype=dtype, is_elementwise=True)


def fit_vocabularies(train: pl.LazyFrame, features: Sequence[Feature]) -> dict[str, Vocabulary]:
    """The vocabulary of every feature that owns a table (all but numeric and shared sequences), fitted
    on the train rows in one streaming pass, and extended by its pretrained tables' keys."""
    owners = [f for f in features if f.type != "numeric" and f.share_embedding is None]
    queries, owner_of = [], []
    for owner in owners:
        for feature in [owner, *[f for f in features if f.share_embedding == owner.name]]:
            queries.append((feature.source, feature.type == "sequence"))
            owner_of.append(owner.name)
    counted = count_values(train, list(dict.fromkeys(queries)))  # a column several features use: counted once
    counts = [counted[query] for query in queries]
    vocabularies = {}
    for owner in owners:
        owned = [frame for frame, name in zip(counts, owner_of) if name == owner.name]
        dtypes = {frame["value"].dtype for frame in owned}
        if len(dtypes) > 1:
            raise CtrbenchError(f"{owner.name}: the columns sharing its vocabulary hold different types {dtypes}")
        vocabulary = Vocabulary.from_counts(owned, owner.min_count)
        for table in owner.pretrained:
            try:
                vocabulary = vocabulary.extended(table.keys.cast(vocabulary.values.dtype))
            except pl.exceptions.InvalidOperationError:
                raise CtrbenchError(f"{table.path}: keys of type {table.keys.dtype} do not match the values of "
                                    f"{owner.name} ({vocabulary.values.dtype})") from None
        vocabularies[owner.name] = vocabulary
    return vocabularies


def stored_once(targets: Sequence[tuple[str, str, Vocabulary]]) -> dict[str, tuple[str, str | None, np.ndarray | None]]:
    """Which of the sequences made from one raw column (name, table owner, vocabulary) are stored.

    A sequence whose vocabulary's values all belong to a stored one's (KuaiVideo's pos_items, item_id
    at min count 10, inside pos_items_emb's item_emb, every item) is not stored: it reads that column
    through an index map, the stored vocabulary's index -> its own (padding and OOV to themselves),
    exact since a value outside the larger vocabulary is outside the smaller one too. Returns, per
    name: the column it reads, its map's file (None: the same vocabulary), and the map (None where
    another sequence writes that file, or none is needed).
    """
    kept: list[tuple[str, str, Vocabulary]] = []
    plan, written = {}, set()
    for name, owner, vocabulary in sorted(targets, key=lambda target: -target[2].size):  # larger first
        into = next((k for k in kept if k[2] is vocabulary or (k[2].lookup(vocabulary.values) != OOV_INDEX).all()), None)
        if into is None:
            kept.append((name, owner, vocabulary))
            plan[name] = name, None, None
        elif into[2] is vocabulary:
            plan[name] = into[0], None, None
        else:
            path = f"index_maps/{into[1]}-{owner}.npy"
            mapping = None if path in written else np.concatenate(
                [np.array([PADDING_INDEX, OOV_INDEX], np.int32), vocabulary.lookup(into[2].values)])
            written.add(path)
            plan[name] = into[0], path, mapping
    return plan


def encoding(features: Sequence[Feature], vocabularies: dict[str, Vocabulary]
             ) -> tuple[list[FeatureSpec], list[pl.Expr], dict[str, np.ndarray]]:
    """Each feature's spec, the expressions computing the processed columns from the raw columns, and the
    index maps to write (relative path -> int32 array).

    The sequences made from one raw column (e.g. KuaiVideo's pos_items and pos_items_emb) come out of
    one struct column, to be unnested: the column is split once for all of them, and stored once where
    one's vocabulary holds the others' (`stored_once`).
    """
    specs, columns, sequences, index_maps = [], [], {}, {}
    for feature in features:
        if feature.type == "numeric":
            specs.append(FeatureSpec(name=feature.name, type=feature.type, transform=feature.transform))
            columns.append(pl.col(feature.source).cast(pl.Float32).alias(feature.name))
            continue
        vocabulary = vocabularies[feature.share_embedding or feature.name]
        specs.append(FeatureSpec(name=feature.name, type=feature.type, vocab_size=vocabulary.size,
                                 padding_idx=PADDING_INDEX, oov_idx=OOV_INDEX, max_len=feature.max_len,
                                 share_embedding=feature.share_embedding, min_count=feature.min_count,
                                 embedding_source=f"pretrained/{feature.name}.npy" if feature.pretrained else None,
                                 pretrained_dim=feature.pretrained[0].dim if feature.pretrained else None))
        if feature.type == "sequence":
            sequences.setdefault((feature.source, feature.max_len, feature.keep), []).append(
                (feature.name, feature.share_embedding or feature.name, vocabulary))
        else:
            columns.append(encode_batches(pl.col(feature.source), pl.Int32,
                                          lambda values, v=vocabulary: pl.Series(v.lookup(values)))
                           .alias(feature.name))
    for (source, max_len, keep), targets in sequences.items():
        plan = stored_once(targets)
        for i, spec in enumerate(specs):
            if spec.name in plan and plan[spec.name][0] != spec.name:
                column, path, mapping = plan[spec.name]
                specs[i] = dataclasses.replace(spec, column=column, index_map=path)
                if mapping is not None:
                    index_maps[path] = mapping
        names, vocabs = zip(*[(name, vocabulary) for name, _, vocabulary in targets if plan[name][0] == name])

        def encode(column: pl.Series, names=names, vocabs=vocabs, max_len=max_len, keep=keep) -> pl.Series:
            encoded = encode_sequence(column, vocabs, max_len, keep)
            return pl.DataFrame(dict(zip(names, encoded))).to_struct(column.name)

        dtype = pl.Struct({name: pl.List(pl.Int32) for name in names})
        columns.append(encode_batches(pl.col(source), dtype, encode).alias(f"{source}:{max_len}:{keep}"))
    return specs, columns, index_maps
