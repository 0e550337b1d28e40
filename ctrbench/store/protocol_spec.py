"""The comparison protocols' file (`model_zoo/configs/protocol.yaml`): each protocol's tuning budget, checked
on load. Running a protocol is `ctrbench.app.protocol`; the leaderboard reads the caps and budgets from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctrbench.core.config import build_dataclass, check_kwargs, load_yaml
from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.data.datasets import MODEL_CONFIG_DIR

PROTOCOL_FILE = "protocol.yaml"


@dataclass(frozen=True)
class Cap:
    """A smaller budget for one model on one dataset, and why."""

    reason: str
    embedding_dims: list[int] | None = None  # tried instead of the protocol's dims
    grid_points: int | None = None  # instead of the protocol's number


@dataclass(frozen=True)
class Protocol:
    """A tuning budget: which embedding dims and how many further grid points every model gets."""

    name: str
    grid_points: int
    description: str = ""
    embedding_dims: dict[str, list[int]] = field(default_factory=dict)  # dataset -> dims; not listed: config's, 128
    caps: dict[str, dict[str, Cap]] = field(default_factory=dict)  # dataset -> model -> cap

    def cap(self, dataset: str, model: str) -> Cap | None:
        return self.caps.get(dataset, {}).get(model)

    def dims(self, dataset: str, model: str, config_dim: int | None) -> list[int]:
        cap = self.cap(dataset, model)
        if cap is not None and cap.embedding_dims is not None:
            return list(cap.embedding_dims)
        dims = self.embedding_dims.get(dataset) or [d for d in (config_dim, 128) if d is not None]
        return list(dict.fromkeys(dims))

    def points(self, dataset: str, model: str) -> int:
        cap = self.cap(dataset, model)
        return self.grid_points if cap is None or cap.grid_points is None else cap.grid_points


def load_protocol(name: str, config_dir: Path | None = None) -> Protocol:
    """The protocol `name` of `<config dir>/protocol.yaml`, checked: unknown keys stop with one line."""
    path = Path(config_dir or MODEL_CONFIG_DIR) / PROTOCOL_FILE
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise CtrbenchError(f"{path}: expected a mapping of protocol name -> its settings")
    if name not in data:
        raise unknown_name(f"protocol (in {path})", name, data)
    where = f"{path}: {name}"
    values = check_kwargs(data[name], {"description": str, "grid_points": int, "embedding_dims": dict[str, list[int]],
                                       "caps": dict[str, dict[str, dict[str, Any]]]}, where)
    caps = {dataset: {model: build_dataclass(Cap, cap, f"{where}.caps.{dataset}.{model}")
                      for model, cap in models.items()}
            for dataset, models in values.pop("caps", {}).items()}
    if "grid_points" not in values:
        raise CtrbenchError(f"{where}: missing key 'grid_points' (how many search-space points every model gets)")
    protocol = Protocol(name=name, caps=caps, **values)
    if protocol.grid_points < 0:
        raise CtrbenchError(f"{where}.grid_points: must be >= 0, got {protocol.grid_points}")
    return protocol
