"""Schemas shared by every router: the error envelope and the declared error responses."""

from __future__ import annotations

from ninja import Schema


class ErrorOut(Schema):
    """The body of every error response."""

    detail: str
    code: str


def error_responses(*statuses: int) -> dict[int, type[ErrorOut]]:
    """Return the `response=` entries declaring `ErrorOut` for each status."""
    return dict.fromkeys(statuses, ErrorOut)


# Statuses any endpoint with a user token can return: a bad body or parameter (400, 422), a
# missing or rejected token (401), a refused role or an unverified email (403), an unknown id
# (404), a conflict with existing data (409) and an unreachable identity provider (503).
USER_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 503)
