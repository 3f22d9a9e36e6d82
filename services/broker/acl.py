"""The access-control list: what each role may read and write, as Mosquitto ACL text.

Devices are not listed one by one: a device's username is its device id and ``pattern``
rules with ``%u`` give it its own topics only. Mosquitto applies patterns to every
account, which is why service usernames are reserved and never used as device ids.

Mosquitto grants a SUBSCRIBE the ACL forbids and then silently withholds each message at
delivery; a PUBLISH the ACL forbids is acknowledged and dropped. So a misconfigured role
shows up as missing data, not as an error: the integration tests check delivery.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from services.broker.settings import Accounts, Role
from services.contract import topics
from services.contract.topics import DeviceTopic


class Access(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    topic: str


def _device_kind(kind: DeviceTopic, device: str = "+") -> str:
    return topics.subscription(kind, site="+", device=device)


#: Every account, with %u replaced by its username. A device publishes telemetry, its
#: retained status (and last will), and alerts/events from its own model, under its own id
#: only; it reads commands addressed to it. Every account reads the replies addressed to it.
PATTERNS: tuple[Rule, ...] = (
    Rule(Access.WRITE, _device_kind(DeviceTopic.TELEMETRY, "%u")),
    Rule(Access.WRITE, _device_kind(DeviceTopic.STATUS, "%u")),
    Rule(Access.WRITE, _device_kind(DeviceTopic.ALERT, "%u")),
    Rule(Access.WRITE, _device_kind(DeviceTopic.EVENT, "%u")),
    Rule(Access.READ, _device_kind(DeviceTopic.CMD, "%u")),
    Rule(Access.READ, f"{topics.ROOT}/infer/+/reply/%u"),
)

ROLE_RULES: dict[Role, tuple[Rule, ...]] = {
    # Stores telemetry, watches device status, and asks a collector to resend a gap.
    Role.INGEST: (
        Rule(Access.READ, _device_kind(DeviceTopic.TELEMETRY)),
        Rule(Access.READ, _device_kind(DeviceTopic.STATUS)),
        Rule(Access.WRITE, _device_kind(DeviceTopic.CMD)),
    ),
    # Watches the stream, answers requests, raises alerts and forwards summaries.
    Role.INFERENCE: (
        Rule(Access.READ, _device_kind(DeviceTopic.TELEMETRY)),
        Rule(Access.READ, _device_kind(DeviceTopic.STATUS)),
        Rule(Access.READ, topics.MODEL_ANNOUNCE_ALL),
        Rule(Access.READ, topics.INFER_REQUEST_ALL),
        Rule(Access.WRITE, f"{topics.ROOT}/infer/+/reply/#"),
        Rule(Access.WRITE, _device_kind(DeviceTopic.ALERT)),
        Rule(Access.WRITE, _device_kind(DeviceTopic.EVENT)),
        Rule(Access.WRITE, _device_kind(DeviceTopic.SUMMARY)),
        # Edge filtering forwards to edgeloop/v1/upstream/<site>/<device>/<kind> when the
        # upstream broker is this one.
        Rule(Access.WRITE, f"{topics.ROOT}/upstream/#"),
    ),
    # Announces the approved version of each model (retained).
    Role.REGISTRY: (Rule(Access.READWRITE, topics.MODEL_ANNOUNCE_ALL),),
    # Sends inference requests; reads its replies through the pattern above, so a client
    # must use edgeloop/v1/infer/<model>/reply/<its username> as its response topic.
    Role.CLIENT: (Rule(Access.WRITE, topics.INFER_REQUEST_ALL),),
    # Read-only view for dashboards and people on call.
    Role.OBSERVER: (
        Rule(Access.READ, f"{topics.ROOT}/#"),
        Rule(Access.READ, "$SYS/#"),
    ),
}


def _lines(prefix: str, rules: Sequence[Rule]) -> list[str]:
    return [f"{prefix} {rule.access.value} {rule.topic}" for rule in rules]


def render_acl(accounts: Accounts) -> str:
    """The ACL file for these accounts. Topics before any ``user`` line would apply to
    anonymous clients; there are none, and anonymous clients are refused anyway."""
    out = [
        "# Rendered by `edgeloop broker render` from services/broker/acl.py: change the",
        "# roles there or the accounts in the broker config, not this file.",
        "",
        "# Every account; %u is the username. A device's username is its device id.",
        *_lines("pattern", PATTERNS),
    ]
    for role in Role:
        for name in sorted(accounts.for_role(role)):
            out += ["", f"# role: {role.value}", f"user {name}", *_lines("topic", ROLE_RULES[role])]
    return "\n".join(out) + "\n"
