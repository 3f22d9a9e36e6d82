"""MQTT topic builders and parsers under one versioned root.

Every topic edgeloop publishes or subscribes to is built here, so a change of shape is
one diff. Device-scoped topics are ``edgeloop/v1/<site>/<device>/<kind>``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from services.contract.limits import MAX_NAME_LEN

ROOT: Final = "edgeloop/v1"

#: Ids (site, device, model, field names) are plain tokens: safe in topics, tags and paths.
ID_PATTERN: Final = rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_NAME_LEN - 1}}}$"
_ID_RE: Final = re.compile(ID_PATTERN)


class DeviceTopic(enum.StrEnum):
    """The kinds of per-device topics."""

    TELEMETRY = "telemetry"
    STATUS = "status"  # retained; last will sets it offline
    ALERT = "alert"
    EVENT = "event"  # classification events (e.g. freefall)
    CMD = "cmd"
    SUMMARY = "summary"  # edge-filtered periodic summaries forwarded upstream


class ContractTopicError(ValueError):
    """A topic that is not one of the contract's shapes."""


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def check_id(kind: str, value: str) -> str:
    if not is_valid_id(value):
        raise ContractTopicError(
            f"invalid {kind} id {value!r}: use 1-{MAX_NAME_LEN} of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return value


def device_topic(site: str, device: str, kind: DeviceTopic) -> str:
    return f"{ROOT}/{check_id('site', site)}/{check_id('device', device)}/{kind.value}"


def telemetry(site: str, device: str) -> str:
    return device_topic(site, device, DeviceTopic.TELEMETRY)


def status(site: str, device: str) -> str:
    return device_topic(site, device, DeviceTopic.STATUS)


def alert(site: str, device: str) -> str:
    return device_topic(site, device, DeviceTopic.ALERT)


def event(site: str, device: str) -> str:
    return device_topic(site, device, DeviceTopic.EVENT)


def cmd(site: str, device: str) -> str:
    return device_topic(site, device, DeviceTopic.CMD)


def summary(site: str, device: str) -> str:
    return device_topic(site, device, DeviceTopic.SUMMARY)


def subscription(kind: DeviceTopic, site: str = "+", device: str = "+") -> str:
    """A filter for one kind of device topic; ``+`` wildcards by default."""
    return f"{ROOT}/{site}/{device}/{kind.value}"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT v5 shared subscription: replicas in one group split the messages."""
    return f"$share/{check_id('group', group)}/{topic_filter}"


def model_announce(name: str) -> str:
    return f"{ROOT}/models/{check_id('model', name)}/announce"


MODEL_ANNOUNCE_ALL: Final = f"{ROOT}/models/+/announce"


def infer_request(model: str) -> str:
    return f"{ROOT}/infer/{check_id('model', model)}/request"


INFER_REQUEST_ALL: Final = f"{ROOT}/infer/+/request"


def infer_reply(model: str, client: str) -> str:
    """A conventional reply topic for clients that do not choose their own."""
    return f"{ROOT}/infer/{check_id('model', model)}/reply/{check_id('client', client)}"


@dataclass(frozen=True, slots=True)
class DeviceTopicParts:
    site: str
    device: str
    kind: DeviceTopic


def parse_device_topic(topic: str) -> DeviceTopicParts:
    """Split ``edgeloop/v1/<site>/<device>/<kind>``; raise ContractTopicError otherwise."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise ContractTopicError(f"not a device topic: {topic!r}")
    site, device, kind = parts[2], parts[3], parts[4]
    check_id("site", site)
    check_id("device", device)
    try:
        return DeviceTopicParts(site, device, DeviceTopic(kind))
    except ValueError:
        raise ContractTopicError(f"unknown device topic kind {kind!r} in {topic!r}") from None


def parse_model_topic(topic: str) -> tuple[str, str]:
    """Split ``edgeloop/v1/models/<name>/announce`` or ``edgeloop/v1/infer/<name>/request``.

    Returns (model name, last segment).
    """
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT or parts[2] not in ("models", "infer"):
        raise ContractTopicError(f"not a model topic: {topic!r}")
    return check_id("model", parts[3]), parts[4]
