"""The controller's exception tree and the error codes of its API.

Every API error leaves as one JSON envelope `{"detail": str, "code": str}`. Services raise an
`ApiError` subclass; `api.py` turns it into the envelope with the subclass's HTTP status.
"""

from __future__ import annotations

from enum import StrEnum

from netsody_common.errors import NetsodyError


class ErrorCode(StrEnum):
    """Machine-readable error codes, the `code` field of every API error."""

    INVALID = "invalid"
    INVALID_DOCUMENT = "invalid_document"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a secret
    EMAIL_NOT_VERIFIED = "email_not_verified"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    ADDRESS_POOL_EXHAUSTED = "address_pool_exhausted"
    JOIN_KEY_INVALID = "join_key_invalid"
    CHALLENGE_INVALID = "challenge_invalid"
    SIGNATURE_INVALID = "signature_invalid"
    PROOF_OF_WORK_INVALID = "proof_of_work_invalid"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNAVAILABLE = "unavailable"
    UPSTREAM_FAILED = "upstream_failed"
    INTERNAL = "internal_error"


class ControllerError(NetsodyError):
    """Base of every error the controller raises on purpose."""


class ConfigError(ControllerError):
    """An environment variable or file of the controller's configuration is invalid."""


class ApiError(ControllerError):
    """An error that becomes an API response with `status` and the envelope."""

    status = 400
    default_code = ErrorCode.INVALID

    def __init__(self, detail: str, code: ErrorCode | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code


class InvalidRequestError(ApiError):
    status = 400
    default_code = ErrorCode.INVALID


class UnauthenticatedError(ApiError):
    status = 401
    default_code = ErrorCode.UNAUTHENTICATED


class ForbiddenError(ApiError):
    status = 403
    default_code = ErrorCode.FORBIDDEN


class NotFoundError(ApiError):
    status = 404
    default_code = ErrorCode.NOT_FOUND


class ConflictError(ApiError):
    status = 409
    default_code = ErrorCode.CONFLICT


class UnavailableError(ApiError):
    status = 503
    default_code = ErrorCode.UNAVAILABLE
