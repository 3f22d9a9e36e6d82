"""The collector: serial devices, a simulator or recordings in; MQTT telemetry out.

Every accepted reading is written to an on-disk outbox before it is published and is
removed from the pending set only when the broker acknowledges it, so a broker outage,
a ``kill -9`` or a power cut loses nothing that was accepted.
"""
