"""Loaded models, addressed by name and optional version, swapped atomically.

A request takes a reference to a :class:`LoadedModel` and keeps it until it is answered,
so a swap never pulls a model from under an in-flight request: the old object simply
finishes its work and is dropped when the last holder lets go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import ModelCard
from services.inference import pipeline
from services.inference.runtimes import Runtime


class UnknownModelError(KeyError):
    pass


@dataclass(frozen=True, eq=False)
class LoadedModel:
    card: ModelCard
    runtime: Runtime
    sha256: str
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    def predict_raw(self, raws: Sequence[Any]) -> npt.NDArray[np.float64]:
        """Raw client inputs → final outputs, one row per input."""
        x = pipeline.prepare(self.card, raws)
        return pipeline.finish(self.card, self.runtime.predict(x))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.card.task.value,
            "runtime": self.runtime.kind.value,
            "sha256": self.sha256,
            "input": self.card.input.model_dump(mode="json"),
            "labels": list(self.card.labels),
            "output_shape": list(self.card.output_shape),
            "loaded_at": self.loaded_at,
        }


class ModelSet:
    """Thread-safe name → active model, plus a few older versions still addressable."""

    def __init__(self, keep_versions: int = 2) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, LoadedModel] = {}
        self._versions: dict[str, dict[int, LoadedModel]] = {}
        self._keep = keep_versions

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        with self._lock:
            if version is None:
                model = self._active.get(name)
            else:
                model = self._versions.get(name, {}).get(version)
        if model is None:
            where = f"{name} v{version}" if version is not None else name
            raise UnknownModelError(f"model {where} is not loaded")
        return model

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._active

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` the active one under its name; return the one it replaced."""
        with self._lock:
            old = self._active.get(model.name)
            self._active[model.name] = model
            versions = self._versions.setdefault(model.name, {})
            versions[model.version] = model
            for v in sorted(versions)[: max(0, len(versions) - self._keep)]:
                if v != model.version:
                    del versions[v]
        return old

    def remove(self, name: str) -> LoadedModel | None:
        with self._lock:
            self._versions.pop(name, None)
            return self._active.pop(name, None)

    def active(self) -> list[LoadedModel]:
        with self._lock:
            return sorted(self._active.values(), key=lambda m: m.name)

    def versions(self, name: str) -> list[int]:
        with self._lock:
            return sorted(self._versions.get(name, {}))

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)
