"""Property-based tests of the raw-file parsers (libfm, CSV, Criteo TSV) on random malformed lines.

For every generated file, each parser either stops with a one-line `CtrbenchError` naming the file,
or accounts for every row: with `--skip-bad-rows`, rows in = rows kept + rows counted as skipped,
exactly, and the rows kept are the ones on the lines they came from. Without it, the parser stops at
the first row the skipping run dropped (`file:line: ...`), or keeps them all when it dropped none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ctrbench.core.errors import CtrbenchError
from preprocess.bad_rows import BadRows
from preprocess.criteo_read import COLUMNS, LineBlocks, read_rows
from preprocess.readers import read_csv, read_libfm

# 400 examples per parser keep the default suite quick; HYPOTHESIS_EXAMPLES=5000 fuzzes deeper.
FUZZ = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 400)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("user", "item", "tag")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def parse_both_ways(parse, path: Path, starts: list[int]) -> tuple[BadRows, pl.DataFrame] | None:
    """Parse with and without skipping and check that the two agree; `starts` is the line each row of
    the file starts on. Returns the skipping run's policy and rows (with their `line`), or None when the
    file stops the parser in both modes."""
    policy = BadRows(skip=True)
    try:
        kept = parse(path, policy)
    except CtrbenchError as error:
        assert str(error).startswith(f"{path}") and "\n" not in str(error)
        with pytest.raises(CtrbenchError) as strict_error:  # not a bad row: stops whatever the mode
            parse(path, BadRows())
        assert str(strict_error.value) == str(error)
        return None
    strict = BadRows()
    if policy.total == 0:
        assert parse(path, strict).equals(kept) and strict.total == 0
    else:
        with pytest.raises(CtrbenchError) as error:
            parse(path, strict)
        assert "\n" not in str(error.value)
        first_dropped = min(set(starts) - set(kept["line"]))
        assert str(error.value).startswith(f"{path}:{first_dropped}: ")
    assert len(kept) + policy.total == len(starts)  # every row kept or counted
    return policy, kept


def write_lines(path: Path, lines: list[str], line_end: str, final_newline: bool) -> Path:
    """One line per entry of `lines`: an empty last line needs its line end to be a line at all."""
    final_newline = final_newline or lines[-1] == ""
    path.write_bytes((line_end.join(lines) + (line_end if final_newline else "")).encode("utf-8"))
    return path


line_ends = st.sampled_from(["\n", "\r\n"])

# ---- libfm ----------------------------------------------------------------------------------------

# Tokens: valid ones, near misses, and random text without whitespace or control characters.
libfm_tokens = st.one_of(
    st.sampled_from(["1", "-1", "0", "+1", "3:1", "17:1", "3:0.5", "3:", ":1", "a:1", "-3:1", "3:1:1", "1e3:1",
                     "99999999999999999999:1", "\u0663:1", "3:nan"]),
    st.text(alphabet=st.characters(exclude_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=6),
)
valid_libfm_line = st.builds(lambda label, indices: " ".join([label, *(f"{i}:1" for i in indices)]),
                             st.sampled_from(["-1", "1"]), st.lists(st.integers(0, 10**6), min_size=3, max_size=3))
libfm_line = st.one_of(valid_libfm_line, st.builds(lambda separator, tokens: separator.join(tokens),
                                                   st.sampled_from([" ", "  ", "\t"]), st.lists(libfm_tokens, max_size=6)))


def well_formed_libfm(line: str) -> bool:
    tokens = line.split()
    indices = [t[:-2] for t in tokens[1:] if t.endswith(":1")]
    return (len(tokens) == len(FIELDS) + 1 and tokens[0] in ("-1", "1") and len(indices) == len(FIELDS)
            and all(i.isascii() and i.isdigit() and int(i) < 2**63 for i in indices))


def parse_libfm(path: Path, policy: BadRows) -> pl.DataFrame:
    return read_libfm(path, FIELDS, ("-1", "1"), policy)


@FUZZ
@given(lines=st.lists(libfm_line, min_size=1, max_size=25), line_end=line_ends, final_newline=st.booleans())
def test_libfm_parser_counts_every_line(scratch, lines, line_end, final_newline):
    path = write_lines(scratch / "fuzz.libfm", lines, line_end, final_newline)
    outcome = parse_both_ways(parse_libfm, path, list(range(1, len(lines) + 1)))
    if outcome is not None:
        _, kept = outcome
        assert kept["line"].to_list() == [n for n, line in enumerate(lines, start=1) if well_formed_libfm(line)]


# ---- CSV ------------------------------------------------------------------------------------------

# A field is plain text, or quoted text that may hold the separator, quotes and line ends.
plain_text = st.text(alphabet=st.characters(exclude_characters='",\n\r', exclude_categories=("Cs",)), max_size=5)
quoted_text = st.text(alphabet=st.sampled_from(list('ab ,"\n\r')), max_size=5)
csv_field = st.one_of(plain_text.map(lambda text: (text, text)),
                      quoted_text.map(lambda text: (text, '"' + text.replace('"', '""') + '"')))
csv_row = st.lists(csv_field, max_size=len(FIELDS) + 2)  # (value, as written) per field; 0 fields: an empty line


def parse_csv(path: Path, policy: BadRows) -> pl.DataFrame:
    return read_csv(path, FIELDS, policy)


@FUZZ
@given(rows=st.lists(csv_row, min_size=1, max_size=15), line_end=line_ends, final_newline=st.booleans())
def test_csv_parser_counts_every_row_and_keeps_its_text(scratch, rows, line_end, final_newline):
    lines = [",".join(FIELDS), *(",".join(written for _, written in row) for row in rows)]
    path = write_lines(scratch / "fuzz.csv", lines, line_end, final_newline)
    starts = list(np.cumsum([2] + [line.count("\n") + 1 for line in lines[1:-1]]))  # quoted line ends count
    outcome = parse_both_ways(parse_csv, path, starts)
    assert outcome is not None, "well-quoted rows never stop the parser"
    _, kept = outcome
    values = [[value for value, _ in row] for row in rows]
    good = [(start, *row[:len(FIELDS)]) for start, row in zip(starts, values)
            if len(row) >= len(FIELDS) and all(row[:len(FIELDS)]) and not any(row[len(FIELDS):])]
    assert kept.rows() == good  # the well-formed rows (empty fields after the last column pass), text and line


@FUZZ
@given(rows=st.lists(csv_row, min_size=1, max_size=15), where=st.tuples(st.integers(0), st.integers(0), st.integers(0)))
def test_csv_parser_stops_at_a_stray_quote(scratch, rows, where):
    """One quote too many, put in an unquoted field: the parser stops (a quote may span lines, so the
    rows after it cannot be told apart), naming the line of the quote when no quoted value spans lines."""
    plain = [(r, f) for r, row in enumerate(rows) for f, (value, written) in enumerate(row) if value == written]
    assume(plain)
    r, f = plain[where[0] % len(plain)]
    value = rows[r][f][0]
    cut = where[1] % (len(value) + 1)
    rows[r][f] = (None, value[:cut] + '"' + value[cut:])
    lines = [",".join(FIELDS), *(",".join(written for _, written in row) for row in rows)]
    path = write_lines(scratch / "stray.csv", lines, "\n", True)
    starts = list(np.cumsum([2] + [line.count("\n") + 1 for line in lines[1:-1]]))
    for policy in (BadRows(skip=True), BadRows()):
        with pytest.raises(CtrbenchError) as error:
            parse_csv(path, policy)
        message = str(error.value)
        assert message.startswith(f"{path}:") and "\n" not in message
        if not any("\n" in line for line in lines):
            assert message.startswith(f"{path}:{starts[r]}: a quote opened on this line is never closed")


# ---- Criteo ---------------------------------------------------------------------------------------

criteo_label = st.sampled_from(["0", "1", "2", "", "-1", " 1", "1.0", "x"])
criteo_integer = st.one_of(st.integers(-10**6, 10**6).map(str), st.sampled_from(
    ["", "+4", "1.5", "nan", "inf", "-inf", "0x1f", "99999999999999999999", " 7", "\u0663", "1_000", "-"]))
criteo_id = st.one_of(st.integers(0, 2**32 - 1).map(lambda i: f"{i:08x}"), st.sampled_from(
    ["", "68FD1E64", "+1234567", "-1234567", "68fd1e6", "68fd1e64a", "ghijklmn", " 68fd1e6"]))
other_text = st.text(alphabet=st.characters(exclude_characters="\t\n", exclude_categories=("Cs",)), max_size=8)
criteo_fields = st.tuples(criteo_label, st.lists(criteo_integer, min_size=13, max_size=13),
                          st.lists(criteo_id, min_size=26, max_size=26)).map(lambda t: [t[0], *t[1], *t[2]])
criteo_line = st.one_of(
    criteo_fields.map("\t".join),
    st.builds(lambda fields, keep: "\t".join(fields[:keep]), criteo_fields, st.integers(0, len(COLUMNS))),  # short
    st.builds(lambda fields, extra: "\t".join(fields + extra), criteo_fields, st.lists(other_text, min_size=1, max_size=4)),
    st.lists(other_text, max_size=6).map("\t".join),
)
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
ID_TEXT = re.compile(r"[0-9a-fA-F]{8}")


def expected_criteo_row(text: str) -> tuple | None:
    """The row a Criteo line gives (label, integers transformed, ids), or None when it breaks a rule."""
    fields = text.split("\t")
    fields += [""] * (len(COLUMNS) - len(fields))
    label, integers, ids = fields[0], fields[1:14], fields[14:]
    if (len(fields) > len(COLUMNS) or label not in ("0", "1")
            or not all(v == "" or (INTEGER_TEXT.fullmatch(v) and abs(int(v)) < 2**63) for v in integers)
            or not all(v == "" or ID_TEXT.fullmatch(v) for v in ids)):
        return None
    return (float(label), *(float(np.float32(np.log1p(max(int(v), 0)))) if v else 0.0 for v in integers),
            *(int(v, 16) if v else None for v in ids))


def parse_criteo(block_bytes: int):
    def parse(path: Path, policy: BadRows) -> pl.DataFrame:
        parts = [pl.DataFrame({COLUMNS[0]: rows.label, **dict(zip(COLUMNS[1:14], rows.numeric)),
                               **{name: pl.Series(ids).replace(-1, None) for name, ids in zip(COLUMNS[14:], rows.ids)},
                               "line": rows.lines})
                 for rows in read_rows(LineBlocks(path, block_bytes), policy, "fuzzing")]
        return pl.concat(parts)
    return parse


# A quarter of the examples: each one starts the converter's reader and writer threads (about 0.1 s), and
# tests/test_preprocess_criteo.py mutates 600 generated lines against the careful path besides.
@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 4))
@given(lines=st.lists(criteo_line, min_size=1, max_size=20), line_end=line_ends, final_newline=st.booleans(),
       block_bytes=st.sampled_from([256, 1000, 1 << 20]))
def test_criteo_parser_counts_every_line_across_blocks(scratch, lines, line_end, final_newline, block_bytes):
    path = write_lines(scratch / "day_0", lines, line_end, final_newline)
    outcome = parse_both_ways(parse_criteo(block_bytes), path, list(range(1, len(lines) + 1)))
    assert outcome is not None, "lines of at most 4 blocks never stop the parser"
    _, kept = outcome
    # polars takes CRLF as a line end, so CRLF files parse like LF files
    expected = {n: expected_criteo_row(line) for n, line in enumerate(lines, start=1)}
    assert kept["line"].to_list() == [n for n, row in expected.items() if row is not None]
    for got, want in zip(kept.select(COLUMNS).rows(), [row for row in expected.values() if row is not None]):
        assert got == pytest.approx(want)
