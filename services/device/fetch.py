"""Find the firmware image for a model: a local bundle, or a signed registry version.

Registry versions are checked before a byte is parsed: size, sha256 and the Ed25519
signature over the sha256 hex with the key the device side trusts. A bundle from the
trainer carries the image as ``c/model.bin``; an older bundle without it gets one made by
the C export here.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.modelkit.bundle import Bundle, BundleError, read_bundle
from services.modelkit.signing import SigningError, key_id, load_public_key, verify_digest

BLOB_MEMBER = "c/model.bin"


class FetchError(RuntimeError):
    pass


@dataclass(frozen=True)
class FetchedModel:
    name: str
    version: int
    blob: bytes
    source: str
    verified: bool


def _parse_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition("@")
    if not version:
        return name, None
    try:
        return name, int(version)
    except ValueError:
        raise FetchError(f"bad model reference {ref!r} (want NAME or NAME@VERSION)") from None


def _check(data: bytes, sha256: str, signature: str, kid: str, size: int,
           public_key: Path) -> None:
    key = load_public_key(public_key)
    if len(data) != size:
        raise FetchError(f"bundle is {len(data)} bytes, the registry says {size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise FetchError(f"bundle sha256 {digest[:12]}... is not the registry's {sha256[:12]}...")
    if kid != key_id(key):
        raise FetchError(f"signed with key {kid}, the trusted key is {key_id(key)}")
    try:
        verify_digest(key, sha256, signature)
    except SigningError as exc:
        raise FetchError(f"signature check failed: {exc}") from None


def _from_registry(ref: str, registry: str, public_key: Path) -> tuple[bytes, str]:
    name, version = _parse_ref(ref)
    if registry.startswith(("http://", "https://")):
        from services.trainer.registry.client import RegistryClient

        with RegistryClient(registry, None) as client:
            meta = client.meta(name, version)
            data = client.fetch_bundle(name, meta.version)
    else:
        from services.trainer.registry.store import RegistryStore

        store = RegistryStore(Path(registry), None)
        meta = store.meta(name, store.resolve(name, version))
        data = store.bundle_path(name, meta.version).read_bytes()
    _check(data, meta.sha256, meta.signature, meta.key_id, meta.size_bytes, public_key)
    return data, f"{registry} {name} v{meta.version}"


def blob_of(bundle: Bundle) -> bytes:
    """The firmware image inside a bundle, or made from its int8 model."""
    if BLOB_MEMBER in bundle.files:
        return bundle.files[BLOB_MEMBER]
    from services.trainer.c_export import UnsupportedModel, export_c

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return export_c(bundle.model_bytes, bundle.card, Path(tmp)).blob
        except UnsupportedModel as exc:
            raise FetchError(f"{bundle.card.name} cannot run on the firmware: {exc}") from None


def fetch_model(ref: str, *, registry: str | None = None, public_key: Path | None = None
                ) -> FetchedModel:
    path = Path(ref)
    if registry is None:
        if not path.is_file():
            raise FetchError(f"{ref} is not a bundle file; give --registry to fetch by name")
        data, source, verified = path.read_bytes(), str(path), False
    else:
        if public_key is None:
            raise FetchError("--public-key is required to check the registry's signature")
        data, source = _from_registry(ref, registry, public_key)
        verified = True
    try:
        bundle = read_bundle(data)
    except BundleError as exc:
        raise FetchError(str(exc)) from None
    return FetchedModel(bundle.card.name, bundle.card.version, blob_of(bundle), source, verified)
