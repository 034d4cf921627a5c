"""Profile pictures: where a user's picture comes from, and fetching it within strict limits.

The source is the provider's `picture` claim, or else the Gravatar image of the email address.
`fetch_picture` downloads it with a timeout, a size limit that applies even when Content-Length
is wrong, an allow-list of image types and redirects only to http(s) URLs. Storage and
scheduling live in `storage.py` and `tasks.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from django.conf import settings

from netsody_controller.accounts.models import User
from netsody_controller.errors import ControllerError

ALLOWED_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
FETCH_TIMEOUT_SECS = 10.0
MAX_REDIRECTS = 3
# Statuses worth a retry: the picture host may serve the picture later.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Uncompressed transfer, so the size limit counts what is stored.
FETCH_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity"}


class PictureError(ControllerError):
    """Fetching a profile picture failed."""


class PictureRejectedError(PictureError):
    """The picture host responded with something that is not stored, so a retry would not help."""


class PictureUnavailableError(PictureError):
    """The picture host could not be reached or failed on its side (worth a retry)."""


@dataclass(frozen=True)
class Picture:
    content: bytes
    content_type: str


def gravatar_url(email: str) -> str:
    """Return the Gravatar image URL of `email` (SHA-256 of the trimmed, lowercased address)."""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    query = urlencode({"s": settings.GRAVATAR_SIZE, "d": settings.GRAVATAR_DEFAULT})
    return f"{settings.GRAVATAR_BASE_URL.rstrip('/')}/{digest}?{query}"


def picture_source(user: User) -> str:
    """Return the URL the user's picture comes from, or "" when there is none."""
    if user.picture:
        return user.picture
    if user.email and settings.GRAVATAR_BASE_URL:
        return gravatar_url(user.email)
    return ""


def _check_scheme(url: httpx.URL) -> None:
    # SECURITY: only http(s); a redirect to file:, ftp: or any other scheme is rejected.
    if url.scheme not in {"http", "https"}:
        raise PictureRejectedError(
            f"The picture URL has the scheme {url.scheme!r}; only http and https are fetched"
        )


# SECURITY: the URL comes from the identity provider, and some providers let users set it, so
# the worker may be pointed at internal addresses. Only an image of an allowed type is stored
# and nothing of a rejected response reaches the user, but the request itself is made.
def fetch_picture(url: str, *, max_bytes: int) -> Picture:
    """Download the picture at `url`, following at most MAX_REDIRECTS http(s) redirects.

    Raises PictureRejectedError for a client error status, a disallowed content type, a body
    over `max_bytes` or a bad redirect, and PictureUnavailableError for network errors, server
    errors and throttling.
    """
    target = httpx.URL(url)
    with httpx.Client(timeout=FETCH_TIMEOUT_SECS, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _check_scheme(target)
            try:
                with client.stream("GET", target, headers=FETCH_HEADERS) as response:
                    if response.is_redirect:
                        target = target.join(response.headers.get("location", ""))
                        continue
                    return _read_picture(response, max_bytes=max_bytes)
            except httpx.HTTPError as error:
                raise PictureUnavailableError(
                    f"Fetching the picture from {target.host} failed: {error.__class__.__name__}"
                ) from error
    raise PictureRejectedError(f"The picture URL redirects more than {MAX_REDIRECTS} times")


def _read_picture(response: httpx.Response, *, max_bytes: int) -> Picture:
    host = response.url.host
    if response.status_code >= 500 or response.status_code in TRANSIENT_STATUSES:
        raise PictureUnavailableError(
            f"The picture host {host} returned HTTP {response.status_code}"
        )
    if response.status_code != 200:
        raise PictureRejectedError(f"The picture host {host} returned HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ALLOWED_CONTENT_TYPES:
        allowed = ", ".join(sorted(ALLOWED_CONTENT_TYPES))
        raise PictureRejectedError(
            f"The picture from {host} has the content type {content_type!r}; "
            f"only {allowed} are stored"
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PictureRejectedError(
            f"The picture from {host} has {declared} bytes, over PROFILE_PICTURE_MAX_BYTES="
            f"{max_bytes}"
        )
    # NOTE: the declared length may lie (or be absent), so the bytes are counted as they come.
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise PictureRejectedError(
                f"The picture from {host} is larger than PROFILE_PICTURE_MAX_BYTES={max_bytes}"
            )
        chunks.append(chunk)
    return Picture(content=b"".join(chunks), content_type=content_type)
