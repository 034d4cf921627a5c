"""Invitations in Authentik, created beside Netsody invitations when Authentik is configured.

With AUTHENTIK_BASE_URL, AUTHENTIK_TOKEN and AUTHENTIK_INVITATION_FLOW_ID all set, each Netsody
invitation also creates a single-use Authentik invitation bound to the invited email address,
valid for AUTHENTIK_INVITATION_EXPIRES_SECS, and returns its enrollment link. The REST call is
`POST {base}/api/v3/stages/invitation/invitations/` with the API token as bearer token.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.utils import timezone

from netsody_controller.errors import ApiError, ErrorCode

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECS = 10.0
# Authentik's error bodies can be long. The API error shows their start.
MAX_ERROR_DETAIL_CHARS = 300


class AuthentikError(ApiError):
    """Authentik rejected or failed the invitation, or could not be reached."""

    status = 502
    default_code = ErrorCode.UPSTREAM_FAILED


def enabled() -> bool:
    """Tell whether the three settings that turn the automation on are all set."""
    return bool(
        settings.AUTHENTIK_BASE_URL
        and settings.AUTHENTIK_TOKEN
        and settings.AUTHENTIK_INVITATION_FLOW_ID
    )


def create_invitation(invitation_id: uuid.UUID, email: str) -> str:
    """Create the Authentik invitation of a Netsody invitation and return its enrollment URL.

    Raises AuthentikError when Authentik cannot be reached or returns an error.
    """
    base = settings.AUTHENTIK_BASE_URL.rstrip("/")
    expires = timezone.now() + timedelta(seconds=settings.AUTHENTIK_INVITATION_EXPIRES_SECS)
    body = {
        # Authentik's invitation name is a slug, unique among its invitations.
        "name": f"netsody-{invitation_id}",
        "flow": settings.AUTHENTIK_INVITATION_FLOW_ID,
        "expires": expires.isoformat(),
        "fixed_data": {"email": email},
        "single_use": True,
    }
    # SECURITY: the token goes only into this header. Neither logs nor errors contain it.
    headers = {"Authorization": f"Bearer {settings.AUTHENTIK_TOKEN}", "Accept": "application/json"}
    url = f"{base}/api/v3/stages/invitation/invitations/"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT_SECS)
    except httpx.HTTPError as error:
        logger.warning("reaching Authentik failed", extra={"error": error.__class__.__name__})
        raise AuthentikError(
            f"Authentik at {base} could not be reached ({error.__class__.__name__}); "
            "check AUTHENTIK_BASE_URL and retry"
        ) from error
    if response.status_code not in (200, 201):
        detail = response.text[:MAX_ERROR_DETAIL_CHARS]
        logger.warning(
            "Authentik rejected an invitation",
            extra={"status": response.status_code, "invitation_id": str(invitation_id)},
        )
        raise AuthentikError(
            f"Authentik returned HTTP {response.status_code} when creating the invitation: "
            f"{detail}. "
            "Check AUTHENTIK_TOKEN (it needs permission to add invitations) and "
            "AUTHENTIK_INVITATION_FLOW_ID"
        )
    return _enrollment_url(base, response)


def _enrollment_url(base: str, response: httpx.Response) -> str:
    try:
        created: Any = response.json()
        token = str(created["pk"])
    except (ValueError, KeyError, TypeError) as error:
        raise AuthentikError(
            "Authentik's response to the invitation lacks the invitation id (pk)"
        ) from error
    flow = created.get("flow_obj") or {}
    # NOTE: the enrollment page takes the flow's slug. A response without flow_obj falls back
    # to the configured flow value, which is then assumed to be the slug.
    slug = flow.get("slug") if isinstance(flow, dict) else None
    return f"{base}/if/flow/{slug or settings.AUTHENTIK_INVITATION_FLOW_ID}/?itoken={token}"
