"""The edgeloop wire contract: topics, message models, limits and decoding."""

from services.contract import limits, topics
from services.contract.decode import Rejected, RejectReason, decode_as, decode_telemetry, load_json
from services.contract.models import (
    Alert,
    AlertKind,
    AlertState,
    Command,
    CommandName,
    DeviceState,
    DeviceStatus,
    ErrorCode,
    Event,
    FieldStats,
    InferenceError,
    InferenceRequest,
    InferenceResponse,
    InputSpec,
    Message,
    ModelAnnouncement,
    ModelTask,
    Reading,
    ReadingBatch,
    Sample,
    Severity,
    Summary,
)

__all__ = [
    "Alert", "AlertKind", "AlertState", "Command", "CommandName", "DeviceState",
    "DeviceStatus", "ErrorCode", "Event", "FieldStats", "InferenceError", "InferenceRequest",
    "InferenceResponse", "InputSpec", "Message", "ModelAnnouncement", "ModelTask", "Reading",
    "ReadingBatch", "RejectReason", "Rejected", "Sample", "Severity", "Summary", "decode_as",
    "decode_telemetry", "limits", "load_json", "topics",
]
