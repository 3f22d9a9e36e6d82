"""Check a downloaded bundle against its announcement before parsing a byte of it.

The edge calls :func:`verify_bundle` on what it fetched from the registry: the size and
sha256 must match the (retained) announcement, the announcement's key id must be the key
the edge trusts, and the Ed25519 signature over the sha256 hex must verify. Only then is
the tar parsed, and its card must name the announced model and version.
"""

from __future__ import annotations

import enum
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from services.contract.models import ModelAnnouncement
from services.modelkit.bundle import Bundle, BundleError, read_bundle
from services.modelkit.signing import SigningError, key_id, verify_digest


class VerifyFailure(enum.StrEnum):
    """Why a bundle was refused (small, fixed set: usable as a metric label)."""

    SIZE = "size"
    SHA256 = "sha256"
    KEY_ID = "key_id"
    SIGNATURE = "signature"
    BUNDLE = "bundle"
    MISMATCH = "mismatch"


class VerificationError(ValueError):
    def __init__(self, reason: VerifyFailure, detail: str) -> None:
        super().__init__(f"bundle refused ({reason.value}): {detail}")
        self.reason = reason
        self.detail = detail


def verify_bundle(
    data: bytes, announcement: ModelAnnouncement, public_key: Ed25519PublicKey
) -> Bundle:
    """Return the parsed bundle if ``data`` is exactly what ``announcement`` describes and
    was signed by ``public_key``; raise :class:`VerificationError` otherwise."""
    if len(data) != announcement.size_bytes:
        raise VerificationError(
            VerifyFailure.SIZE,
            f"got {len(data)} bytes, announced {announcement.size_bytes}",
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != announcement.sha256:
        raise VerificationError(
            VerifyFailure.SHA256,
            f"sha256 {digest[:12]}… is not the announced {announcement.sha256[:12]}…",
        )
    trusted = key_id(public_key)
    if announcement.key_id != trusted:
        raise VerificationError(
            VerifyFailure.KEY_ID,
            f"signed with key {announcement.key_id}, this edge trusts {trusted}",
        )
    try:
        verify_digest(public_key, digest, announcement.signature)
    except SigningError:
        raise VerificationError(
            VerifyFailure.SIGNATURE, f"{announcement.name} v{announcement.version}: "
            "signature does not verify"
        ) from None
    try:
        bundle = read_bundle(data)
    except (BundleError, ValidationError, UnicodeDecodeError) as exc:
        raise VerificationError(VerifyFailure.BUNDLE, str(exc)[:300]) from None
    card = bundle.card
    # A version of 0 is a bundle the registry did not version (published elsewhere).
    if card.name != announcement.name or card.version not in (0, announcement.version):
        raise VerificationError(
            VerifyFailure.MISMATCH,
            f"card says {card.name} v{card.version}, announced "
            f"{announcement.name} v{announcement.version}",
        )
    return bundle
