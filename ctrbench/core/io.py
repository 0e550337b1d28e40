"""Small file helpers every layer uses: atomic writes (readers never see a torn file) and file checksums."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file so that readers see either the old or the new content, never a torn one."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only there if writing stopped half-way


def file_digest(path: str | Path, algorithm: str, chunk_bytes: int = 1 << 22) -> str:
    """Hex digest of a file's bytes by a hashlib algorithm ("sha256", "md5"), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    return file_digest(path, "sha256", chunk_bytes)
