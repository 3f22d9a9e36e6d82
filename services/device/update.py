"""Stream a model image to a device: chunks with offsets, ACK/NAK, resume, retries.

:func:`update_device_model` is the one call other services use (the inference service
calls it when configured to follow a model announcement with a device update).
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from services.device.link import DeviceLink, LinkError
from services.device.metrics import UpdateMetrics
from services.device.protocol import (
    RETRYABLE,
    FrameType,
    NakReason,
    Reply,
    ReplyKind,
    encode_frame,
    image_hash,
)
from services.modelkit.bundle import Bundle

log = logging.getLogger(__name__)

#: Chunk size: small enough that a resend after line noise is cheap, and below the
#: device's 256-byte maximum.
DEFAULT_CHUNK = 128


class UpdateError(RuntimeError):
    """The device refused the image (``reason``) or the transfer could not finish."""

    def __init__(self, message: str, reason: NakReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class UpdateResult:
    hash: str
    slot: str
    resumed_from: int = 0
    chunks: int = 0
    resends: int = 0
    naks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    already_current: bool = False


#: Test and fault-injection hook: (offset, encoded frame) -> the bytes actually sent.
FrameFilter = Callable[[int, bytes], bytes]


class ModelUpdater:
    """One image, one link. ``begin`` / ``send`` / ``commit`` can be driven step by step
    (tests interrupt a transfer between them); :func:`update_device_model` runs them."""

    def __init__(self, link: DeviceLink, blob: bytes, *, chunk: int = DEFAULT_CHUNK,
                 max_resends: int = 8, frame_timeout_s: float = 3.0,
                 frame_filter: FrameFilter | None = None,
                 metrics: UpdateMetrics | None = None) -> None:
        self.link = link
        self.blob = blob
        self.crc = image_hash(blob)
        self.chunk = chunk
        self.max_resends = max_resends
        self.frame_timeout_s = frame_timeout_s
        self.frame_filter = frame_filter
        self.metrics = metrics
        self.offset = 0
        self.result = UpdateResult(hash=self.crc, slot="")
        self._naks: Tally[str] = Tally()

    def _nak(self, reason: NakReason) -> None:
        self._naks[reason.value] += 1
        self.result.naks = dict(self._naks)
        if self.metrics:
            self.metrics.naks.labels(reason.value).inc()

    def begin(self) -> int:
        # No blind resend: a second UPDATE line would land in update mode as garbage.
        reply = self.link.command(f"UPDATE {len(self.blob)} {self.crc}", ReplyKind.OK,
                                  ReplyKind.NAK, retries=0)
        if reply.kind is ReplyKind.NAK:
            self._nak(reply.reason)
            raise UpdateError(f"device refused the update: {reply.text}", reply.reason)
        if reply.kind is not ReplyKind.OK or reply.words[:1] != ("UPDATE",):
            raise UpdateError(f"unexpected reply to UPDATE: {reply.text}")
        self.offset = int(reply.fields.get("offset", "0"))
        self.result.resumed_from = self.offset
        self.result.slot = reply.fields.get("slot", "")
        device_max = int(reply.fields.get("chunk", str(self.chunk)))
        self.chunk = max(1, min(self.chunk, device_max))
        return self.offset

    def _exchange(self, frame: bytes, offset: int) -> Reply:
        """Send one frame and wait for its ACK/NAK (or the commit's @OK)."""
        data = self.frame_filter(offset, frame) if self.frame_filter else frame
        self.link.write(data)
        return self.link.wait_reply(
            lambda r: r.kind in (ReplyKind.ACK, ReplyKind.NAK, ReplyKind.OK),
            self.frame_timeout_s,
        )

    def send(self, until: int | None = None) -> int:
        """Send chunks up to ``until`` bytes (default: all); return the acked offset."""
        end = len(self.blob) if until is None else min(until, len(self.blob))
        resends = 0
        while self.offset < end:
            piece = self.blob[self.offset : self.offset + self.chunk]
            frame = encode_frame(FrameType.DATA, self.offset, piece)
            try:
                reply = self._exchange(frame, self.offset)
            except LinkError:
                # Lost frame or lost answer: flush any partial frame, then resend.
                if self.metrics:
                    self.metrics.timeouts.inc()
                self.link.write(b"\0")
                reply = None
            if reply is not None and reply.kind is ReplyKind.ACK:
                acked = reply.offset
                if acked > self.offset:
                    self.result.chunks += 1
                    if self.metrics:
                        self.metrics.chunks.inc()
                        self.metrics.bytes.inc(acked - self.offset)
                    resends = 0
                self.offset = acked
                continue
            if reply is not None and reply.kind is ReplyKind.NAK:
                self._nak(reply.reason)
                if reply.reason not in RETRYABLE:
                    raise UpdateError(f"device refused chunk at {self.offset}: {reply.text}",
                                      reply.reason)
                self.offset = reply.offset
            resends += 1
            self.result.resends += 1
            if resends > self.max_resends:
                raise UpdateError(f"chunk at {self.offset} failed {resends} times "
                                  f"(NAKs so far: {dict(self._naks) or 'none'}; "
                                  f"the others timed out)")
        return self.offset

    def commit(self) -> str:
        """Ask the device to verify and activate the image; return its new hash."""
        reply = self._exchange(encode_frame(FrameType.COMMIT), len(self.blob))
        if reply.kind is ReplyKind.NAK:
            self._nak(reply.reason)
            raise UpdateError(f"device refused the model: {reply.text}", reply.reason)
        if reply.kind is not ReplyKind.OK or reply.words[:1] != ("COMMIT",):
            raise UpdateError(f"unexpected reply to COMMIT: {reply.text}")
        self.result.slot = reply.fields.get("slot", self.result.slot)
        return reply.fields.get("hash", "")

    def abort(self) -> None:
        try:
            self._exchange(encode_frame(FrameType.ABORT), self.offset)
        except LinkError:
            pass


def resync(link: DeviceLink) -> None:
    """Bring a device back to line mode from wherever a broken transfer left it.

    In update mode the 0x00 ends any partial frame and the ABORT frame leaves update mode;
    in line mode the same bytes are one garbage line (``@ERR garbage``). PING then proves
    the device listens to lines again."""
    link.write(b"\0" + encode_frame(FrameType.ABORT) + b"\n")
    link.send_line("PING")
    link.wait_reply(lambda r: r.kind is ReplyKind.PONG)


def update_device_model(
    port: str | DeviceLink,
    blob: bytes,
    *,
    attempts: int = 3,
    chunk: int = DEFAULT_CHUNK,
    baud: int = 115200,
    timeout_s: float = 5.0,
    registry: CollectorRegistry | None = None,
    frame_filter: FrameFilter | None = None,
) -> UpdateResult:
    """Put ``blob`` (a firmware model image from services.trainer.c_export) on the device
    at ``port`` and confirm with INFO. Interrupted transfers resume where the device's
    last ACK left them, within this call (``attempts``) and across calls. Raises
    :class:`UpdateError` if the device refuses the image or never confirms it."""
    metrics = UpdateMetrics(registry) if registry is not None else None
    own = not isinstance(port, DeviceLink)
    link = DeviceLink(port, baud=baud, timeout_s=timeout_s) if isinstance(port, str) else port
    started = time.monotonic()
    expected = image_hash(blob)
    try:
        try:
            info = link.info()
        except LinkError:
            resync(link)  # e.g. still in update mode from an interrupted run
            info = link.info()
        if info.hash == expected:
            if metrics:
                metrics.updates.labels("current").inc()
            return UpdateResult(hash=expected, slot=info.slot, already_current=True)
        updater = ModelUpdater(link, blob, chunk=chunk, frame_filter=frame_filter,
                               metrics=metrics)
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                updater.begin()
                updater.send()
                got = updater.commit()
                break
            except UpdateError as exc:
                if exc.reason is not None and exc.reason not in RETRYABLE:
                    if metrics:
                        metrics.updates.labels("refused").inc()
                    raise
                last = exc
            except LinkError as exc:
                last = exc
            log.warning("device update attempt %d/%d failed: %s", attempt, attempts, last)
            try:
                resync(link)
            except LinkError as exc:
                last = exc
        else:
            if metrics:
                metrics.updates.labels("failed").inc()
            raise UpdateError(f"update failed after {attempts} attempts: {last}")
        info = link.info()
        if info.hash != expected or got != expected:
            if metrics:
                metrics.updates.labels("failed").inc()
            raise UpdateError(f"device reports hash {info.hash}, expected {expected}")
        result = updater.result
        result.slot = info.slot
        result.seconds = time.monotonic() - started
        if metrics:
            metrics.updates.labels("ok").inc()
        log.info("device %s runs model %s (hash %s, slot %s) after %.1f s",
                 link.port, info.model, info.hash, info.slot, result.seconds)
        return result
    finally:
        if own:
            link.close()


def update_device_from_bundle(port: str | DeviceLink, bundle: Bundle, **kwargs: Any
                              ) -> UpdateResult:
    """The same for a bundle that has already been verified (e.g. by the inference
    service's model watcher): its ``c/model.bin``, or an image made by the C export."""
    from services.device.fetch import blob_of

    return update_device_model(port, blob_of(bundle), **kwargs)
