"""Publishing bundles to the registry: a URL (HTTP API) or a directory (a local store).

Everything that can stop a publish is checked before any training starts (the registry
answers, the token or the signing key is there), so a run never trains for minutes and
then publishes half of its models.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

from services.trainer.errors import (
    DataError,
    RegistryUnreachable,
    SigningKeyMissing,
    TrainerError,
)

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, bundle_path: Path, *, approve: bool = True) -> Any: ...


def is_url(registry: str) -> bool:
    return registry.startswith(("http://", "https://"))


def open_publisher(registry: str, *, token: str | None, signing_key: Path | None) -> Publisher:
    if importlib.util.find_spec("services.trainer.registry") is None:
        raise TrainerError("this build has no registry module; use --out and publish later")
    from services.trainer.registry import errors as rerr

    if is_url(registry):
        from services.trainer.registry.client import RegistryClient

        if not token:
            raise DataError(f"publishing to {registry} needs a token: set "
                            "EDGELOOP_REGISTRY_TOKEN (or EDGELOOP_REGISTRY_TOKEN_FILE)")
        client = RegistryClient(registry, token, timeout_s=30.0)
        try:
            client.healthz()
        except rerr.RegistryUnreachable as exc:
            raise RegistryUnreachable(str(exc)) from None
        except rerr.RegistryError as exc:
            raise RegistryUnreachable(f"registry {registry} is not healthy: {exc}") from None
        log.info("registry %s answers", registry)
        return client
    from services.trainer.registry.store import RegistryStore

    if signing_key is None:
        raise SigningKeyMissing(f"publishing to the local store {registry} needs --signing-key "
                                "(create one with `edgeloop registry keygen`)")
    if not signing_key.is_file():
        raise SigningKeyMissing(f"signing key {signing_key} is missing; create one with "
                                "`edgeloop registry keygen`")
    try:
        store = RegistryStore(Path(registry), signing_key)
    except rerr.SigningUnavailable as exc:
        raise SigningKeyMissing(str(exc)) from None
    except OSError as exc:
        raise RegistryUnreachable(f"cannot use {registry} as a registry: {exc}") from None
    return store


def publish(publisher: Publisher, bundle: Path) -> dict[str, Any]:
    from services.trainer.registry import errors as rerr

    try:
        published = publisher.publish(bundle, approve=True)
    except rerr.RegistryUnreachable as exc:
        raise RegistryUnreachable(str(exc)) from None
    except rerr.SigningUnavailable as exc:
        raise SigningKeyMissing(str(exc)) from None
    except rerr.RegistryError as exc:
        raise TrainerError(f"registry refused {bundle.name}: {exc}") from None
    info: dict[str, Any] = published.to_dict() if hasattr(published, "to_dict") else {}
    log.info("published %s v%s (sha256 %s…, %s bytes)", info.get("name"),
             info.get("version"), str(info.get("sha256", ""))[:12], info.get("size_bytes"))
    return info
