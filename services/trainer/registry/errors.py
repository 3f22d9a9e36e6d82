"""Registry errors: one class per thing a caller can act on, each with a stable code.

The same classes are raised by the local store and by the HTTP client, so code that
publishes works the same against a directory or a URL.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The ``code`` of every JSON error the HTTP API returns."""

    BAD_REQUEST = "bad_request"
    BAD_BUNDLE = "bad_bundle"
    TAMPERED = "tampered"
    UNAUTHORIZED = "unauthorized"
    WRITES_DISABLED = "writes_disabled"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    SIGNING_UNAVAILABLE = "signing_unavailable"
    UNREACHABLE = "unreachable"
    INTERNAL = "internal"


#: HTTP status for each code (the client maps back the other way).
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_BUNDLE: 422,
    ErrorCode.TAMPERED: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.WRITES_DISABLED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.SIGNING_UNAVAILABLE: 503,
    ErrorCode.UNREACHABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class RegistryError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


class BadRequest(RegistryError):
    code = ErrorCode.BAD_REQUEST


class BadBundle(RegistryError):
    """The upload is not a model bundle (not a tar, no card, invalid card...)."""

    code = ErrorCode.BAD_BUNDLE


class TamperedBundle(RegistryError):
    """A stored bundle no longer matches its recorded sha256 or signature."""

    code = ErrorCode.TAMPERED


class ModelNotFound(RegistryError):
    code = ErrorCode.NOT_FOUND


class RegistryConflict(RegistryError):
    """The operation does not fit the model's state (promote a retired version, roll
    back with nothing to roll back to)."""

    code = ErrorCode.CONFLICT


class TooLarge(RegistryError):
    code = ErrorCode.TOO_LARGE


class SigningUnavailable(RegistryError):
    """No signing key is configured, or it is missing or unreadable: nothing is published."""

    code = ErrorCode.SIGNING_UNAVAILABLE


class RegistryAuthError(RegistryError):
    """The token is missing or wrong, or the registry has writes disabled."""

    code = ErrorCode.UNAUTHORIZED


class RegistryUnreachable(RegistryError):
    """Connection refused, DNS failure or timeout: the registry did not answer."""

    code = ErrorCode.UNREACHABLE
