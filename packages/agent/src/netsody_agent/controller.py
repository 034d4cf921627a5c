"""Client of the controller's agent API (`/api/agent/*`)."""

from __future__ import annotations

import base64
import logging
import platform
import socket
from typing import Any

import httpx

from netsody_agent import __version__
from netsody_agent.errors import ControllerError
from netsody_agent.urls import controller_api_base
from netsody_common.identity import Identity

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 15.0
LONG_POLL_WAIT_SECONDS = 25
LONG_POLL_MARGIN_SECONDS = 10.0


def os_name() -> str:
    """Return the OS type reported to the controller (`linux`, `darwin`, `windows`, ...)."""
    return platform.system().lower()


def signed_message(prefix: str, challenge: str, pk: str) -> bytes:
    """Return the bytes signed to prove possession of the key: `<prefix>:<challenge>:<pk>`."""
    return f"{prefix}:{challenge}:{pk}".encode()


def b64url(data: bytes) -> str:
    """Encode `data` as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ControllerClient:
    """Calls one controller; `credential` is the node credential once the node is paired."""

    def __init__(self, controller_url: str, *, credential: str | None = None) -> None:
        self.base = controller_api_base(controller_url)
        self.credential = credential
        self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS)

    def __repr__(self) -> str:
        # SECURITY: never show the credential.
        return f"ControllerClient({self.base!r})"

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    async def pair(self, identity: Identity, access_token: str) -> dict[str, Any]:
        """Pair this device with the user of `access_token`; return the node credential."""
        body = await self._proof(identity, "netsody-pair")
        headers = {"Authorization": f"Bearer {access_token}"}
        return await self._request("POST", "/agent/pair", json=body, headers=headers)

    async def join(self, identity: Identity, join_key: str) -> dict[str, Any]:
        """Join a network with a join key; return the node credential."""
        body = await self._proof(identity, "netsody-join")
        body["join_key"] = join_key
        return await self._request("POST", "/agent/join", json=body)

    async def fetch_config(self, revision: int | None) -> dict[str, Any]:
        """Fetch the configuration; with `revision` set, wait for the next one (long poll)."""
        params: dict[str, Any] = {}
        timeout = REQUEST_TIMEOUT_SECONDS
        if revision is not None:
            params = {"revision": revision, "wait": LONG_POLL_WAIT_SECONDS}
            timeout = LONG_POLL_WAIT_SECONDS + LONG_POLL_MARGIN_SECONDS
        return await self._request(
            "GET", "/agent/config", params=params, headers=self._auth(), timeout=timeout
        )

    async def report_status(self, status: dict[str, Any]) -> None:
        """Send the status after an apply."""
        await self._request("POST", "/agent/status", json=status, headers=self._auth())

    async def _proof(self, identity: Identity, prefix: str) -> dict[str, Any]:
        challenge = str((await self._request("POST", "/agent/challenge"))["challenge"])
        signature = identity.sign(signed_message(prefix, challenge, identity.pk))
        return {
            "pk": identity.pk,
            "pow_nonce": identity.pow_nonce,
            "challenge": challenge,
            "signature": b64url(signature),
            "hostname": socket.gethostname(),
            "os": os_name(),
            "agent_version": __version__,
        }

    def _auth(self) -> dict[str, str]:
        if not self.credential:
            raise ControllerError("this node has no credential: run `netsody login` or `join`")
        return {"Authorization": f"Bearer {self.credential}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.base + path
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ControllerError(f"{method} {url} failed: {exc!r}") from exc
        if response.status_code == 204:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            detail = body.get("detail") if isinstance(body, dict) else None
            code = body.get("code") if isinstance(body, dict) else None
            reason = detail or response.text[:200]
            raise ControllerError(
                f"{method} {url} returned HTTP {response.status_code}: {reason}",
                status=response.status_code,
                code=code,
            )
        if not isinstance(body, dict):
            raise ControllerError(f"{method} {url} returned JSON that is not an object")
        return body
