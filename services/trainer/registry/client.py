"""``RegistryClient``: the HTTP API from Python (trainer, edge, demo, CLI).

Failures come back as the registry's own exception classes: ``RegistryUnreachable``
(connection refused, DNS, timeout), ``RegistryAuthError`` (401/403), ``ModelNotFound``
(404), ``RegistryConflict`` (409), ``BadBundle`` (422), ``TooLarge`` (413)...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.contract.card import ModelCard
from services.contract.models import ModelAnnouncement
from services.modelkit.bundle import MAX_BUNDLE_BYTES, Bundle
from services.modelkit.verify import verify_bundle
from services.trainer.registry.errors import (
    BadBundle,
    BadRequest,
    ErrorCode,
    ModelNotFound,
    RegistryAuthError,
    RegistryConflict,
    RegistryError,
    RegistryUnreachable,
    SigningUnavailable,
    TamperedBundle,
    TooLarge,
)
from services.trainer.registry.models import ModelSummary, PublishedModel, VersionMeta

_BY_CODE: dict[ErrorCode, type[RegistryError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.BAD_BUNDLE: BadBundle,
    ErrorCode.TAMPERED: TamperedBundle,
    ErrorCode.UNAUTHORIZED: RegistryAuthError,
    ErrorCode.WRITES_DISABLED: RegistryAuthError,
    ErrorCode.NOT_FOUND: ModelNotFound,
    ErrorCode.CONFLICT: RegistryConflict,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.SIGNING_UNAVAILABLE: SigningUnavailable,
}
_BY_STATUS: dict[int, type[RegistryError]] = {
    401: RegistryAuthError, 403: RegistryAuthError, 404: ModelNotFound, 409: RegistryConflict,
    413: TooLarge, 422: BadBundle,
}


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout_s
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _request(
        self, method: str, path: str, *, auth: bool = False, stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            if not self._token:
                raise RegistryAuthError(
                    f"{method} {url} needs a token: set EDGELOOP_TOKEN (or _FILE)"
                )
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            resp = self._session.request(method, url, headers=headers, timeout=self._timeout,
                                         stream=stream, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RegistryUnreachable(
                f"registry {self.base_url} unreachable: {_reason(exc)}"
            ) from None
        if resp.status_code >= 400:
            raise self._error(method, url, resp)
        return resp

    @staticmethod
    def _error(method: str, url: str, resp: requests.Response) -> RegistryError:
        code: ErrorCode | None = None
        message = resp.text[:300]
        try:
            body = resp.json()
            code = ErrorCode(body["code"])
            message = str(body.get("message", message))
        except (ValueError, KeyError, TypeError):
            pass
        cls = _BY_CODE.get(code) if code else None
        cls = cls or _BY_STATUS.get(resp.status_code, RegistryError)
        text = f"{method} {url}: HTTP {resp.status_code}: {message}"
        return cls(text, code) if code else cls(text)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError:
            raise RegistryError(f"{method} {path}: response is not JSON") from None

    # ------------------------------------------------------------------ reads
    def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/healthz")
        return result

    def list_models(self) -> list[ModelSummary]:
        return [ModelSummary.from_dict(m) for m in self._json("GET", "/v1/models")["models"]]

    def versions(self, name: str) -> list[VersionMeta]:
        data = self._json("GET", f"/v1/models/{name}")
        return [VersionMeta.model_validate(v) for v in data["versions"]]

    def meta(self, name: str, version: int | None = None) -> VersionMeta:
        data = self._json("GET", f"/v1/models/{name}/versions/{_v(version)}")
        return VersionMeta.model_validate(data)

    def announcement(self, name: str) -> ModelAnnouncement:
        """What the registry announces for ``name`` (the same as the retained message)."""
        resp = self._request("GET", f"/v1/models/{name}/announcement")
        return ModelAnnouncement.model_validate_json(resp.content)

    def card(self, name: str, version: int | None = None) -> ModelCard:
        resp = self._request("GET", f"/v1/models/{name}/versions/{_v(version)}/card")
        return ModelCard.model_validate_json(resp.content)

    def fetch_bundle(self, name: str, version: int | None = None) -> bytes:
        """The bundle's bytes (``version`` None = current). Verify before use."""
        return self.fetch_url(f"{self.base_url}/v1/models/{name}/versions/{_v(version)}/bundle")

    def fetch_url(self, url: str) -> bytes:
        """Download an announcement's ``url`` (a path or an absolute URL) with the same
        size limit and errors. What it returns is untrusted until verify_bundle says so."""
        resp = self._request("GET", url, stream=True)
        chunks, total = [], 0
        try:
            for chunk in resp.iter_content(1 << 20):
                total += len(chunk)
                if total > MAX_BUNDLE_BYTES:
                    raise TooLarge(f"{url}: bundle exceeds {MAX_BUNDLE_BYTES} bytes")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"{url}: download failed: {_reason(exc)}") from None
        finally:
            resp.close()
        return b"".join(chunks)

    def fetch_verified(self, name: str, public_key: Ed25519PublicKey) -> Bundle:
        """The announced version of ``name``, checked against its announcement and key."""
        ann = self.announcement(name)
        return verify_bundle(self.fetch_bundle(name, ann.version), ann, public_key)

    # ------------------------------------------------------------------ writes
    def check_token(self) -> None:
        """Raise RegistryAuthError unless the token is accepted for writes."""
        self._request("GET", "/v1/auth", auth=True)

    def publish(self, bundle_path: Path, *, approve: bool = True) -> PublishedModel:
        with bundle_path.open("rb") as f:
            data = self._json(
                "POST", "/v1/models", auth=True, data=f,
                params={"approve": "true" if approve else "false"},
                headers={"Content-Type": "application/x-tar"},
            )
        return PublishedModel.from_dict(data["published"])

    def promote(self, name: str, version: int) -> VersionMeta:
        data = self._json("POST", f"/v1/models/{name}/promote", auth=True,
                          json={"version": version})
        return VersionMeta.model_validate(data["current"])

    def rollback(self, name: str) -> VersionMeta:
        data = self._json("POST", f"/v1/models/{name}/rollback", auth=True)
        return VersionMeta.model_validate(data["current"])

    def retire(self, name: str, version: int) -> VersionMeta | None:
        """Returns the current version afterwards (None if nothing is left approved)."""
        data = self._json("POST", f"/v1/models/{name}/retire", auth=True,
                          json={"version": version})
        current = data["current"]
        return None if current is None else VersionMeta.model_validate(current)


def _v(version: int | None) -> str:
    return "current" if version is None else str(int(version))


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "ECONNREFUSED" in text:
        return "connection refused"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return text.splitlines()[0][:200] if text else type(exc).__name__
