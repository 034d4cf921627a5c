"""The NinjaAPI under /api: routers of every app, authentication, and the error envelope."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from netsody_controller import __version__, oidc
from netsody_controller.accounts.api import router as accounts_router
from netsody_controller.accounts.api import users_router
from netsody_controller.agent.api import router as agent_router
from netsody_controller.auth import UserAuth
from netsody_controller.errors import ApiError, ErrorCode, InvalidRequestError
from netsody_controller.hooks import router as hooks_router
from netsody_controller.keys.api import router as keys_router
from netsody_controller.networks.api import router as networks_router
from netsody_controller.nodes.api import devices_router
from netsody_controller.nodes.api import router as nodes_router
from netsody_controller.policies.api import router as policies_router

logger = logging.getLogger(__name__)


def _bad_text(value: Any) -> bool:
    """Tell whether decoded JSON contains a string PostgreSQL cannot store, with a NUL character
    or a lone surrogate (which has no UTF-8 encoding)."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_bad_text(key) or _bad_text(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_bad_text(item) for item in value)
    return False


class TextSafeParser(Parser):
    """The JSON body parser, rejecting text that the database cannot store."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = super().parse_body(request)
        if _bad_text(data):
            raise InvalidRequestError(
                "The request body contains a NUL character or an unpaired UTF-16 surrogate; "
                "send valid UTF-8 text without NUL"
            )
        return data


api = NinjaAPI(
    title="Netsody controller",
    version=__version__,
    description="Networks, nodes, users, policies, resources, join keys and the agent API.",
    urls_namespace="api",
    docs_url=None,
    openapi_url=None,
    auth=UserAuth(),
    parser=TextSafeParser(),
)


def _envelope(request: HttpRequest, detail: str, code: str, status: int) -> HttpResponse:
    return api.create_response(request, {"detail": detail, "code": code}, status=status)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, error: ApiError) -> HttpResponse:
    return _envelope(request, error.detail, error.code, error.status)


@api.exception_handler(oidc.OidcError)
def _oidc_error(request: HttpRequest, error: oidc.OidcError) -> HttpResponse:
    if error.http_status >= 500:
        logger.warning("identity provider failed", extra={"error": str(error), "code": error.code})
    return _envelope(request, str(error), error.code, error.http_status)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    return _envelope(
        request,
        "Authentication required: send an Authorization: Bearer header",
        ErrorCode.UNAUTHENTICATED,
        401,
    )


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    detail = f"The request body is larger than {limit} bytes; send a smaller one"
    return _envelope(request, detail, ErrorCode.INVALID, 413)


def _location(parts: tuple[object, ...]) -> str:
    """Join a validation error location, naming a repeated part (`body.body.name`) once."""
    names: list[str] = []
    for part in parts:
        if not names or names[-1] != str(part):
            names.append(str(part))
    return ".".join(names)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    problems = []
    for entry in error.errors[:5]:
        location = _location(tuple(entry.get("loc", ())))
        problems.append(f"{location}: {entry.get('msg', 'invalid')}")
    detail = "Invalid request: " + "; ".join(problems) if problems else "Invalid request"
    return _envelope(request, detail, ErrorCode.INVALID, 422)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return _envelope(request, str(error) or "Not found", ErrorCode.NOT_FOUND, 404)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    if isinstance(error.__cause__, ApiError):
        # django-ninja wraps parser errors. Ours carry the message worth showing.
        return _api_error(request, error.__cause__)
    code = ErrorCode.INVALID if error.status_code < 500 else ErrorCode.INTERNAL
    return _envelope(request, str(error), code, error.status_code)


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, error: Exception) -> HttpResponse:
    logger.error("request failed", extra={"path": request.path}, exc_info=error)
    return _envelope(
        request, "Internal error. The controller log has the details", ErrorCode.INTERNAL, 500
    )


api.add_router("/me", accounts_router)
api.add_router("/users", users_router)
api.add_router("/devices", devices_router)
api.add_router("/networks", networks_router)
api.add_router("/networks", nodes_router)
api.add_router("/networks", policies_router)
api.add_router("/networks", keys_router)
api.add_router("/agent", agent_router)
api.add_router("/hooks", hooks_router)
