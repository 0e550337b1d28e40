"""The one exception type users see.

Anything raised as `CtrbenchError` is bad input or a bad environment, not a bug: the CLI prints its
message as a single line (no traceback unless `--debug`) and exits with status 2. The message names
the file / field / line at fault and says how to fix it.
"""

import difflib
from collections.abc import Iterable


class CtrbenchError(Exception):
    """A user-facing error whose message is one self-contained line."""


def closest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelled name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> CtrbenchError:
    """Error for an unknown model / dataset / option name, listing the valid ones."""
    choices = sorted(choices)
    return CtrbenchError(f"unknown {kind} {name!r}{closest(name, choices)}; valid: {', '.join(choices)}")


QUOTE_LIMIT = 200


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` for an error message, cut to about `limit` characters: real headers and lines can
    be kilobytes long, and a message stays one readable line."""
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(shown) - limit:,} more characters)"
