"""Where each dataset's releases are published, and the checksums their publishers give.

A dataset config lists its releases under `releases:` (`Release`): the download page and each file,
with the md5 its publisher states (BARS gives one for every x1 file; the raw releases give none).
`ctrbench datasets --sources` prints them, so that a user knows what to download before downloading;
`ctrbench preprocess` compares each input file it read whose name has a published md5 with them
(`check_inputs`), says which release file it matches or warns that it matches none, and records the
verdict in the feature map. A mismatch is only a warning: a re-export or a fixed release still converts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import file_digest

MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass
class ReleaseFile:
    """One file of a release: its name, the md5 its publisher states (None: none published) and its data rows
    as published (None: not stated)."""

    name: str
    md5: str | None = None
    rows: int | None = None


@dataclass
class Release:
    """One published release of a dataset."""

    name: str  # as its publisher calls it, e.g. "BARS Frappe_x1"
    url: str | None = None  # download page; None where no source we read names one
    files: list[ReleaseFile] = field(default_factory=list)
    read_as: str | None = None  # the converter's name for it (`ctrbench preprocess --release`); None: not read yet
    checksums_from: str | None = None  # where the md5s were read (repository@commit and file)


def check_releases(releases: list[Release], where: str) -> None:
    """Stop with one line naming the release and file when a stated md5 is not 32 lowercase hex digits or a
    name repeats."""
    names = [release.name for release in releases]
    for release in releases:
        if names.count(release.name) > 1:
            raise CtrbenchError(f"{where}: release {release.name!r} is listed twice")
        for file in release.files:
            if file.md5 is not None and not MD5.fullmatch(file.md5):
                raise CtrbenchError(f"{where}: release {release.name!r}, file {file.name!r}: md5 must be 32 "
                                    f"lowercase hex digits, got {file.md5!r}")
        if any(file.md5 for file in release.files) and not release.checksums_from:
            raise CtrbenchError(f"{where}: release {release.name!r} states md5s but not where they were read "
                                "(checksums_from)")


@dataclass(frozen=True)
class InputCheck:
    """An input file compared with the published checksums: `matches` names the release file it is
    ("BARS Frappe_x1 train.csv"), None when it is none of them."""

    file: str
    md5: str
    matches: str | None

    def message(self, dataset: str) -> str:
        if self.matches is not None:
            return f"{dataset}: {self.file} matches {self.matches}"
        return (f"{dataset}: warning: {self.file} does not match any known release (md5 {self.md5}); see "
                "`ctrbench datasets --sources` for the published checksums")


def names_with_md5(releases: list[Release]) -> set[str]:
    """The file names that have a published md5 in some release."""
    return {file.name for release in releases for file in release.files if file.md5}


def check_inputs(releases: list[Release], raw_dir: Path, names: list[str]) -> list[InputCheck]:
    """Compare the inputs `names` (files in `raw_dir`) whose names have a published md5 with every published
    md5 of the dataset (a renamed file still matches); other inputs are not hashed."""
    published = {file.md5: f"{release.name} {file.name}" for release in releases for file in release.files if file.md5}
    checks = []
    for name in sorted(names_with_md5(releases) & set(names)):
        md5 = file_digest(raw_dir / name, "md5")
        checks.append(InputCheck(name, md5, published.get(md5)))
    return checks
