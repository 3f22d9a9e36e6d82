"""What the registry writes on disk and returns: version metadata, the channel, results.

``meta.json`` is written once per version and only its ``state`` changes afterwards;
``channel.json`` names the current approved version and the promotion history that
``rollback`` walks back.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contract.card import ModelCard, Pipeline
from services.contract.models import Id, InputSpec, ModelTask, TimestampNs

META_SCHEMA: Final = "edgeloop.registry-meta/1"
CHANNEL_SCHEMA: Final = "edgeloop.registry-channel/1"


class ModelState(enum.StrEnum):
    #: Published and eligible to be current (it is in the channel's history).
    APPROVED = "approved"
    #: Stored and signed, not (or no longer) approved: promote it to make it current.
    CANDIDATE = "candidate"
    #: Never served again; its files stay for audit.
    RETIRED = "retired"


class _Stored(BaseModel):
    # Files written by a newer edgeloop may carry keys this one does not know: ignore them
    # rather than refuse to read a store.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class CardSummary(_Stored):
    """The parts of the card that listings and announcements need, without the bundle."""

    task: ModelTask
    created: TimestampNs
    description: str = ""
    input: InputSpec
    pipeline: Pipeline
    labels: list[Id] = Field(default_factory=list)
    output_shape: list[int]
    model_file: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    sizes: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def of(cls, card: ModelCard) -> CardSummary:
        return cls(
            task=card.task, created=card.created, description=card.description,
            input=card.input, pipeline=card.pipeline, labels=card.labels,
            output_shape=card.output_shape, model_file=card.model_file,
            metrics=card.metrics, sizes=card.sizes,
        )


class VersionMeta(_Stored):
    schema_: Literal["edgeloop.registry-meta/1"] = Field(default=META_SCHEMA, alias="schema")
    name: Id
    version: int = Field(ge=1)
    #: sha256 hex of ``bundle.tar``: what is signed, announced and checked by the edge.
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: base64 Ed25519 signature over the sha256 hex.
    signature: str
    key_id: str
    size_bytes: int = Field(ge=1)
    #: When the registry stored it (ns since the epoch).
    created: TimestampNs
    state: ModelState
    #: sha256 of the bundle as uploaded (before the registry wrote its version into the
    #: card), so a retried upload of the same file finds the version it already made.
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    card: CardSummary
    #: Files in the bundle and their sizes in bytes.
    files: dict[str, int] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Channel(_Stored):
    schema_: Literal["edgeloop.registry-channel/1"] = Field(
        default=CHANNEL_SCHEMA, alias="schema"
    )
    name: Id
    #: The approved version the edge should run, or None.
    current: int | None = None
    #: Approved versions in promotion order; the last one is current. ``rollback`` pops it.
    history: list[int] = Field(default_factory=list)
    #: The version most recently current, kept when none is left so that the retained
    #: announcement can say ``retired=true`` for it.
    last_current: int | None = None
    updated: TimestampNs = 0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class PublishedModel:
    name: str
    version: int
    sha256: str
    signature: str
    key_id: str
    size_bytes: int
    state: ModelState = ModelState.APPROVED
    #: True when the same bundle was already stored and that version was returned.
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishedModel:
        return cls(
            name=str(data["name"]), version=int(data["version"]), sha256=str(data["sha256"]),
            signature=str(data["signature"]), key_id=str(data["key_id"]),
            size_bytes=int(data["size_bytes"]), state=ModelState(data["state"]),
            duplicate=bool(data.get("duplicate", False)),
        )


@dataclass(frozen=True)
class ModelSummary:
    """One line of ``list_models()``."""

    name: str
    current: int | None
    latest: int
    versions: int
    task: ModelTask

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["task"] = self.task.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSummary:
        current = data.get("current")
        return cls(
            name=str(data["name"]), current=None if current is None else int(current),
            latest=int(data["latest"]), versions=int(data["versions"]),
            task=ModelTask(data["task"]),
        )
