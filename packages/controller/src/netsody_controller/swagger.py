"""The OpenAPI document (`/api-doc`) and Swagger UI (`/swagger-ui/`) with OAuth2 sign-in.

Swagger UI's files come from django-ninja's package (no CDN). Its "Authorize" dialog uses the
authorization code grant with PKCE against the provider found through OAUTH_PATH, with
OAUTH_CLIENT_ID as the public client, and returns to `/swagger-ui/oauth2-redirect.html`.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from pathlib import Path
from typing import Any

import ninja
from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse

from netsody_controller import oidc

logger = logging.getLogger(__name__)

STATIC_DIR = Path(ninja.__file__).parent / "static" / "ninja"
STATIC_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})
OAUTH_SCHEME = "OAuth2"
OAUTH_SCOPES = {"openid": "OpenID Connect sign-in", "profile": "name", "email": "email address"}


def _discovery() -> oidc.ProviderMetadata | None:
    from netsody_controller.auth import _provider

    if not settings.OAUTH_PATH or not settings.OAUTH_AUDIENCE:
        return None
    try:
        return _provider(settings.OAUTH_PATH, settings.OAUTH_AUDIENCE).metadata
    except oidc.OidcError as error:
        logger.warning("OIDC discovery for Swagger UI failed", extra={"error": str(error)})
        return None


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document, with an OAuth2 scheme when discovery succeeds."""
    from netsody_controller.api import api

    schema = dict(api.get_openapi_schema(path_prefix="/api"))
    metadata = _discovery()
    if metadata is None or not metadata.authorization_endpoint or not metadata.token_endpoint:
        return schema
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[OAUTH_SCHEME] = {
        "type": "oauth2",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": metadata.authorization_endpoint,
                "tokenUrl": metadata.token_endpoint,
                "scopes": OAUTH_SCOPES,
            }
        },
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            security = operation.get("security")
            if security and any("UserAuth" in entry for entry in security):
                operation["security"] = [*security, {OAUTH_SCHEME: list(OAUTH_SCOPES)}]
    return schema


def api_doc(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_document())


def swagger_ui(request: HttpRequest) -> HttpResponse:
    settings_json = json.dumps(
        {
            "url": "/api-doc",
            "oauth2RedirectUrl": request.build_absolute_uri("/swagger-ui/oauth2-redirect.html"),
            "clientId": settings.OAUTH_CLIENT_ID,
            "scopes": " ".join(OAUTH_SCOPES),
        }
    ).replace("<", "\\u003c")  # nothing in the JSON can close the script element
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Netsody controller API</title>
<link rel="icon" href="/swagger-ui/static/favicon.png">
<link rel="stylesheet" href="/swagger-ui/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script id="swagger-settings" type="application/json">{settings_json}</script>
<script src="/swagger-ui/static/swagger-ui-bundle.js"></script>
<script src="/swagger-ui/init.js"></script>
</body>
</html>
"""
    return HttpResponse(page, content_type="text/html; charset=utf-8")


_INIT_JS = """
const settings = JSON.parse(document.getElementById("swagger-settings").textContent);
const ui = SwaggerUIBundle({
  url: settings.url,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  oauth2RedirectUrl: settings.oauth2RedirectUrl,
  presets: [SwaggerUIBundle.presets.apis],
});
ui.initOAuth({
  clientId: settings.clientId,
  scopes: settings.scopes,
  usePkceWithAuthorizationCodeGrant: true,
});
window.ui = ui;
"""

# The page the provider redirects to: it hands the code (or error) back to the Swagger UI window
# that opened the sign-in popup, after checking the OAuth2 state parameter.
_REDIRECT_HTML = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Swagger UI: OAuth2 redirect</title></head>
<body>
<script>
(function () {
  const oauth2 = window.opener && window.opener.swaggerUIRedirectOauth2;
  if (!oauth2) { document.body.textContent = "Open this page from Swagger UI."; return; }
  const raw = /code|token|error/.test(window.location.hash)
    ? window.location.hash.substring(1) : window.location.search.substring(1);
  const params = Object.fromEntries(new URLSearchParams(raw));
  const sentState = oauth2.state;
  const isValid = params.state === sentState;
  const flow = oauth2.auth.schema.get("flow");
  if ((flow === "accessCode" || flow === "authorizationCode" || flow === "authorization_code")
      && !oauth2.auth.code) {
    if (!isValid) {
      oauth2.errCb({authId: oauth2.auth.name, source: "auth", level: "warning",
        message: "The OAuth2 state returned by the identity provider does not match."});
    }
    if (params.code) {
      delete oauth2.state;
      oauth2.auth.code = params.code;
      oauth2.callback({auth: oauth2.auth, redirectUrl: oauth2.redirectUrl});
    } else {
      const reason = params.error
        ? "[" + params.error + "]: " + (params.error_description || "no description") +
          (params.error_uri ? " More info: " + params.error_uri : "")
        : "No authorization code was returned by the identity provider.";
      oauth2.errCb({authId: oauth2.auth.name, source: "auth", level: "error", message: reason});
    }
  } else {
    oauth2.callback({auth: oauth2.auth, token: params, isValid: isValid,
      redirectUrl: oauth2.redirectUrl});
  }
  window.close();
})();
</script>
</body>
</html>
"""


def swagger_init(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_INIT_JS, content_type="text/javascript; charset=utf-8")


def oauth2_redirect(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_REDIRECT_HTML, content_type="text/html; charset=utf-8")


def swagger_static(request: HttpRequest, name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise Http404(name)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse((STATIC_DIR / name).open("rb"), content_type=content_type)
