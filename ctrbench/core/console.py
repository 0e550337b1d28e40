"""The two consoles every command prints through: status lines and progress bars go to stderr, tables
to stdout. Kept apart from the training code so that commands which never train do not import torch."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True)
