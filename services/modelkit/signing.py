"""Ed25519 signatures over model artifacts.

What is signed is the ASCII sha256 hex digest of the artifact, so an announcement can
carry (sha256, signature) and the edge verifies both before it loads a byte of the model.
The key id is the first 16 hex digits of the sha256 of the raw public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningError(ValueError):
    """A key that is missing or unreadable, or a signature that does not verify."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def generate_keypair(directory: Path, name: str = "edgeloop") -> KeyPair:
    """Write ``<name>.key`` (PKCS8 PEM, mode 0600) and ``<name>.pub`` (PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    if priv_path.exists():
        raise SigningError(f"{priv_path} exists; refusing to overwrite a signing key")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(priv_path, pub_path, key_id(private.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningError(
            f"signing key {path} is missing; create one with `edgeloop registry keygen`"
        ) from None
    except (OSError, ValueError) as exc:
        raise SigningError(f"signing key {path} is unreadable: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise SigningError(f"public key {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise SigningError(f"public key {path} is unreadable: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key")
    return key


def sign_digest(private: Ed25519PrivateKey, sha256_hex: str) -> str:
    return base64.b64encode(private.sign(sha256_hex.encode("ascii"))).decode("ascii")


def verify_digest(public: Ed25519PublicKey, sha256_hex: str, signature_b64: str) -> None:
    """Raise SigningError unless ``signature_b64`` signs ``sha256_hex`` with ``public``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public.verify(signature, sha256_hex.encode("ascii"))
    except (InvalidSignature, ValueError):
        raise SigningError("signature does not verify") from None
