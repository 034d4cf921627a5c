"""Views of the dashboard: the app's page (at `/` and `/callback`), its files and its config."""

from __future__ import annotations

from pathlib import Path

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from netsody_controller.dashboard.config import dashboard_config
from netsody_controller.dashboard.csp import content_security_policy

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only these files are served: a request cannot name a path outside the folder.
ASSETS = frozenset(
    path.name for path in STATIC_DIR.iterdir() if path.suffix in CONTENT_TYPES and path.is_file()
)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-cache"
    return response


@require_safe
def app_page(request: HttpRequest) -> HttpResponse:
    """Return the single-page app, the same document for `/` and the OIDC `/callback`."""
    response = HttpResponse(
        (STATIC_DIR / "index.html").read_bytes(), content_type="text/html; charset=utf-8"
    )
    response["Content-Security-Policy"] = content_security_policy(dashboard_config(request))
    # SECURITY: the callback URL carries the authorization code, so no page sends a Referer.
    response["Referrer-Policy"] = "no-referrer"
    return _no_store(response)


@require_safe
def config_json(request: HttpRequest) -> JsonResponse:
    """Return the dashboard configuration (API URL, OIDC client, login command)."""
    return _no_store(JsonResponse(dashboard_config(request).as_json()))


@require_safe
def asset(request: HttpRequest, name: str) -> FileResponse:
    """Return one of the app's script, style or image files."""
    if name not in ASSETS:
        raise Http404(f"No dashboard file {name!r}")
    path = STATIC_DIR / name
    response = FileResponse(path.open("rb"), content_type=CONTENT_TYPES[path.suffix])
    response["Cache-Control"] = "no-cache"
    return response
