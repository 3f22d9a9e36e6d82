"""Explicit limits on what edgeloop accepts over the wire.

They are deliberately generous for real sensors and small enough that one bad client
cannot make a Pi allocate without bound.
"""

from __future__ import annotations

from typing import Final

#: Largest MQTT payload any edgeloop service parses (bytes). Larger payloads are rejected
#: before JSON decoding.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: Named values in one reading.
MAX_VALUES: Final = 64
#: Length of a value name, a device id, a site id or a model name.
MAX_NAME_LEN: Final = 64
#: Readings packed into one telemetry message (collectors batch when the rate is high).
MAX_BATCH: Final = 2000
#: Inputs in one inference request (rows of a batch).
MAX_INFER_BATCH: Final = 4096
#: How far in the future a reading's timestamp may be, against the receiver's clock (ns).
MAX_FUTURE_SKEW_NS: Final = 5 * 60 * 1_000_000_000
#: Sequence numbers are unsigned 63-bit so they fit every storage backend's integer.
MAX_SEQ: Final = 2**63 - 1
