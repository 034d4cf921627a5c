"""Request context: request id, client address behind trusted proxies, and one log line per
request."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from netsody_controller.logsetup import NODE_ID, REQUEST_ID, USER_ID

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = ("/healthz", "/readyz")


def client_ip(remote_addr: str, forwarded_for: str | None, trusted: tuple[object, ...]) -> str:
    """Return the client address, following X-Forwarded-For only through trusted proxies.

    SECURITY: the header is read from the right, and only while each hop is a trusted proxy;
    the first untrusted hop is the client. A client cannot forge its address by sending the
    header itself, because its own hop is not trusted.
    """

    def is_trusted(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(address in network for network in trusted)

    if not is_trusted(remote_addr) or not forwarded_for:
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    client = remote_addr
    for hop in reversed(hops):
        client = hop
        if not is_trusted(hop):
            break
    try:
        ipaddress.ip_address(client)
    except ValueError:
        return remote_addr
    return client


class RequestContextMiddleware:
    """Sets the request id (from X-Request-ID when valid) and client IP, logs each request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], object]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        started = self._start(request)
        response = self.get_response(request)
        return self._finish(request, response, started)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = self._start(request)
        response = await self.get_response(request)
        return self._finish(request, response, started)

    def _start(self, request: HttpRequest) -> float:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        request.client_ip = client_ip(
            request.META.get("REMOTE_ADDR", ""),
            request.headers.get("X-Forwarded-For"),
            settings.TRUSTED_PROXIES,
        )
        REQUEST_ID.set(request_id)
        USER_ID.set(None)
        NODE_ID.set(None)
        return time.monotonic()

    def _finish(self, request: HttpRequest, response: HttpResponse, started: float) -> HttpResponse:
        if response.status_code == 405 and "json" not in response.get("Content-Type", ""):
            # django-ninja returns an empty 405 for a method the path lacks: add the envelope.
            allow = response.get("Allow", "")
            response = JsonResponse(
                {
                    "detail": f"Method {request.method} is not allowed here. Use {allow}",
                    "code": "method_not_allowed",
                },
                status=405,
            )
            response["Allow"] = allow
        response[REQUEST_ID_HEADER] = request.request_id
        if request.path not in _QUIET_PATHS:
            level = logging.WARNING if response.status_code >= 500 else logging.INFO
            logger.log(
                level,
                "request served",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                    "client_ip": request.client_ip,
                },
            )
        return response
