"""The WSGI application of the development OpenID provider."""

import base64
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from netsody_controller.devidp import pages
from netsody_controller.devidp.provider import DevIdp, OAuthError, RedirectError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
StartResponse = Callable[..., Any]

_REASONS = {
    200: "OK",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
}


class Request:
    """The parts of a WSGI request the endpoints use."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.method = environ["REQUEST_METHOD"].upper()
        self.path = environ.get("PATH_INFO", "/") or "/"
        self.query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        self.authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
        self.form: dict[str, str] = {}
        content_type = environ.get("CONTENT_TYPE", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY_BYTES:
            raise OAuthError(
                "invalid_request", f"Request body is larger than {MAX_BODY_BYTES} bytes"
            )
        if length and content_type.startswith("application/x-www-form-urlencoded"):
            body = environ["wsgi.input"].read(length).decode("utf-8", errors="replace")
            self.form = dict(parse_qsl(body, keep_blank_values=True))

    def bearer_token(self) -> str | None:
        scheme, _, value = self.authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return self.form.get("access_token")

    def basic_client_id(self) -> str | None:
        """Return the client id of HTTP Basic client authentication (RFC 6749 section 2.3.1)."""
        scheme, _, value = self.authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip()).decode("utf-8")
        except ValueError:
            return None
        return unquote(decoded.partition(":")[0])


class Response:
    """A status, headers and a body."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type)]

    @classmethod
    def json(cls, document: Any, status: int = 200) -> "Response":
        response = cls(status, json.dumps(document).encode(), "application/json")
        response.headers.append(("Cache-Control", "no-store"))
        return response

    @classmethod
    def html(cls, text: str, status: int = 200) -> "Response":
        return cls(status, text.encode(), "text/html; charset=utf-8")

    @classmethod
    def redirect(cls, location: str) -> "Response":
        response = cls(302, b"", "text/plain")
        response.headers.append(("Location", location))
        return response

    @classmethod
    def oauth_error(cls, error: OAuthError) -> "Response":
        response = cls.json(
            {"error": error.error, "error_description": error.description}, error.status
        )
        if error.status == 401 and error.error == "invalid_token":
            response.headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
        return response


class DevIdpApp:
    """Route WSGI requests to the endpoints of a `DevIdp`."""

    def __init__(self, idp: DevIdp) -> None:
        self.idp = idp
        self._routes: dict[str, Callable[[Request], Response]] = {
            "/": self._index,
            "/.well-known/openid-configuration": self._discovery,
            "/jwks": self._jwks,
            "/authorize": self._authorize,
            "/token": self._token,
            "/device_authorization": self._device_authorization,
            "/device": self._device,
            "/userinfo": self._userinfo,
            "/logout": self._logout,
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            request = Request(environ)
            response = self._dispatch(request)
        except OAuthError as error:
            response = Response.oauth_error(error)
        except Exception:
            logger.exception("Request failed", extra={"path": environ.get("PATH_INFO")})
            response = Response.json({"error": "server_error"}, 500)
        # Browser clients (dashboard, Swagger UI) call these endpoints from another origin.
        response.headers += [
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Content-Length", str(len(response.body))),
        ]
        reason = _REASONS.get(response.status, "Error")
        start_response(f"{response.status} {reason}", response.headers)
        return [response.body]

    def _dispatch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(204, b"", "text/plain")
        handler = self._routes.get(request.path.rstrip("/") or "/")
        if handler is None:
            return Response.json({"error": "not_found", "path": request.path}, 404)
        return handler(request)

    def _index(self, request: Request) -> Response:
        return Response.html(pages.index_page(self.idp.issuer))

    def _discovery(self, request: Request) -> Response:
        return Response.json(self.idp.discovery_document())

    def _jwks(self, request: Request) -> Response:
        return Response.json(self.idp.keys.jwks())

    def _token(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.json({"error": "invalid_request"}, 405)
        form = dict(request.form)
        basic_client_id = request.basic_client_id()
        if basic_client_id and not form.get("client_id"):
            form["client_id"] = basic_client_id
        return Response.json(self.idp.token(form))

    def _device_authorization(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.json({"error": "invalid_request"}, 405)
        return Response.json(self.idp.start_device_authorization(request.form))

    def _userinfo(self, request: Request) -> Response:
        token = request.bearer_token()
        if token is None:
            raise OAuthError("invalid_token", "No bearer token", status=401)
        return Response.json(self.idp.verify_access_token(token).claims())

    def _logout(self, request: Request) -> Response:
        # The provider keeps no browser session, so signing out only redirects back.
        target = self.idp.logout_redirect(request.query or request.form)
        if target is None:
            return Response.html(pages.page("Signed out", "<p>You are signed out.</p>"))
        return Response.redirect(target)

    def _device(self, request: Request) -> Response:
        if request.method == "GET":
            return Response.html(
                pages.device_form(
                    user_code=request.query.get("user_code", ""),
                    form_token=self.idp.form_token("device"),
                )
            )
        form = request.form
        user_code = form.get("user_code", "")

        def again(message: str) -> Response:
            text = pages.device_form(
                user_code=user_code, form_token=self.idp.form_token("device"), error=message
            )
            return Response.html(text, 400)

        if not self.idp.check_form_token("device", form.get("form_token", "")):
            return again("The form is outdated because the provider restarted; submit it again.")
        grant = self.idp.pending_device_grant(user_code)
        if grant is None:
            return again(f"The code {user_code!r} is unknown, expired or already used.")
        if form.get("action") == "deny":
            self.idp.decide_device_grant(grant, None)
            return Response.html(pages.device_result(approved=False, email=None))
        email = form.get("email", "").strip()
        if "@" not in email:
            return again("Enter an email address to sign in as.")
        user = self.idp.users.sign_in(
            email, name=form.get("name", ""), email_verified=form.get("email_unverified") != "1"
        )
        self.idp.decide_device_grant(grant, user)
        return Response.html(pages.device_result(approved=True, email=user.email))

    def _authorize(self, request: Request) -> Response:
        params = request.query if request.method == "GET" else request.form
        try:
            authorization = self.idp.parse_authorization_request(params)
        except OAuthError as error:
            return Response.html(
                pages.error_page("Sign-in request rejected", error.description), 400
            )
        except RedirectError as error:
            return self._redirect_error(error)
        if request.method == "GET":
            return Response.html(
                pages.authorize_form(
                    client_id=authorization.client_id,
                    params=params,
                    form_token=self.idp.form_token("authorize"),
                )
            )
        if not self.idp.check_form_token("authorize", params.get("form_token", "")):
            message = "The form is outdated because the provider restarted; sign in again."
            return Response.html(pages.error_page("Sign-in failed", message), 400)
        result: dict[str, str]
        if params.get("action") == "approve" and "@" in params.get("email", ""):
            user = self.idp.users.sign_in(
                params["email"],
                name=params.get("name", ""),
                email_verified=params.get("email_unverified") != "1",
            )
            result = {"code": self.idp.issue_authorization_code(authorization, user)}
        elif params.get("action") == "approve":
            text = pages.authorize_form(
                client_id=authorization.client_id,
                params=params,
                form_token=self.idp.form_token("authorize"),
                error="Enter an email address to sign in as.",
            )
            return Response.html(text, 400)
        else:
            result = {"error": "access_denied", "error_description": "The user denied sign-in"}
        return self._redirect(authorization.redirect_uri, result, authorization.state)

    def _redirect_error(self, error: RedirectError) -> Response:
        result = {"error": error.error, "error_description": error.description}
        return self._redirect(error.request.redirect_uri, result, error.request.state)

    def _redirect(self, redirect_uri: str, result: dict[str, str], state: str | None) -> Response:
        # RFC 9207: the iss parameter lets the client detect a mix-up between providers.
        parameters = {**result, "iss": self.idp.issuer}
        if state is not None:
            parameters["state"] = state
        separator = "&" if "?" in redirect_uri else "?"
        return Response.redirect(f"{redirect_uri}{separator}{urlencode(parameters)}")
