"""Talk to edgeloop firmware over a serial line: info, ping, model updates."""

from services.device.update import (
    UpdateError,
    UpdateResult,
    update_device_from_bundle,
    update_device_model,
)

__all__ = ["UpdateError", "UpdateResult", "update_device_from_bundle", "update_device_model"]
