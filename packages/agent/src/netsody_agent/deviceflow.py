"""OAuth 2.0 device authorization grant client (RFC 8628) for `netsody login`.

The provider is found through OpenID Connect discovery at
`<auth-url>/.well-known/openid-configuration`, which must name a
`device_authorization_endpoint` and a `token_endpoint`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from netsody_agent.errors import DeviceFlowError

logger = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid profile email"
DEFAULT_INTERVAL_SECONDS = 5
SLOW_DOWN_STEP_SECONDS = 5  # RFC 8628 section 3.5: add 5 seconds on slow_down
HTTP_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class ProviderEndpoints:
    """The endpoints of the OpenID provider that the device flow uses."""

    issuer: str
    device_authorization_endpoint: str
    token_endpoint: str


@dataclass(frozen=True)
class DeviceAuthorization:
    """The device authorization response (RFC 8628 section 3.2)."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


def discovery_url(auth_url: str) -> str:
    """Return the OpenID discovery URL of the issuer `auth_url`."""
    return auth_url.rstrip("/") + "/.well-known/openid-configuration"


def discover(client: httpx.Client, auth_url: str) -> ProviderEndpoints:
    """Fetch the discovery document; raise `DeviceFlowError` if the flow is not offered."""
    url = discovery_url(auth_url)
    document = _get_json(client, url)
    missing = [
        key for key in ("device_authorization_endpoint", "token_endpoint") if not document.get(key)
    ]
    if missing:
        raise DeviceFlowError(
            f"the OpenID provider at {auth_url} offers no {' or '.join(missing)} in {url}: "
            "enable the device authorization grant for the agent client"
        )
    return ProviderEndpoints(
        issuer=str(document.get("issuer", auth_url)),
        device_authorization_endpoint=str(document["device_authorization_endpoint"]),
        token_endpoint=str(document["token_endpoint"]),
    )


def request_device_code(
    client: httpx.Client, endpoints: ProviderEndpoints, client_id: str, scope: str = DEFAULT_SCOPE
) -> DeviceAuthorization:
    """Start the flow (RFC 8628 section 3.1) and return the codes to show the user."""
    body = _post_form(
        client,
        endpoints.device_authorization_endpoint,
        {"client_id": client_id, "scope": scope},
    )
    try:
        return DeviceAuthorization(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body.get("verification_uri") or body["verification_url"]),
            verification_uri_complete=body.get("verification_uri_complete"),
            expires_in=int(body.get("expires_in", 600)),
            interval=int(body.get("interval", DEFAULT_INTERVAL_SECONDS)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DeviceFlowError(
            f"the device authorization response of {endpoints.device_authorization_endpoint} "
            f"lacks a valid field: {exc}"
        ) from exc


def poll_for_token(
    client: httpx.Client,
    endpoints: ProviderEndpoints,
    client_id: str,
    authorization: DeviceAuthorization,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the token endpoint until the user approves (RFC 8628 section 3.4 and 3.5).

    Returns the token response. Raises `DeviceFlowError` when the user denies the request, the
    code expires, or the provider returns another error.
    """
    interval = max(1, authorization.interval)
    deadline = clock() + authorization.expires_in
    form = {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": authorization.device_code,
        "client_id": client_id,
    }
    while True:
        if clock() >= deadline:
            raise DeviceFlowError("the device code expired before approval: run the login again")
        sleep(interval)
        response = _post(client, endpoints.token_endpoint, form)
        body = _json_body(response, endpoints.token_endpoint)
        if response.status_code == 200 and body.get("access_token"):
            return body
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP_SECONDS
            logger.info("provider asked to slow down; polling every %d s", interval)
            continue
        if error == "expired_token":
            raise DeviceFlowError("the device code expired before approval: run the login again")
        if error == "access_denied":
            raise DeviceFlowError("the login was denied in the browser")
        raise DeviceFlowError(
            f"the token endpoint {endpoints.token_endpoint} returned HTTP "
            f"{response.status_code} with error {error!r}: {body.get('error_description', '')}"
        )


def _get_json(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        response = client.get(url, timeout=HTTP_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise DeviceFlowError(f"cannot reach the OpenID provider at {url}: {exc}") from exc
    if response.status_code != 200:
        raise DeviceFlowError(f"{url} returned HTTP {response.status_code}: check --auth-url")
    return _json_body(response, url)


def _post(client: httpx.Client, url: str, form: dict[str, str]) -> httpx.Response:
    try:
        return client.post(url, data=form, timeout=HTTP_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise DeviceFlowError(f"cannot reach {url}: {exc}") from exc


def _post_form(client: httpx.Client, url: str, form: dict[str, str]) -> dict[str, Any]:
    response = _post(client, url, form)
    body = _json_body(response, url)
    if response.status_code != 200:
        raise DeviceFlowError(
            f"{url} returned HTTP {response.status_code} with error {body.get('error')!r}: "
            f"{body.get('error_description', '')} (check --auth-client-id)"
        )
    return body


def _json_body(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise DeviceFlowError(f"{url} returned a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise DeviceFlowError(f"{url} returned JSON that is not an object")
    return body
