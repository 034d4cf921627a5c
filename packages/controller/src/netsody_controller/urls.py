"""URL routes: the API, its OpenAPI document and Swagger UI, the health checks and the dashboard."""

import os
from pathlib import Path

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

from netsody_controller import health, swagger
from netsody_controller.api import api


def _not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return JsonResponse(
        {"detail": f"No such path: {request.path}", "code": "not_found"}, status=404
    )


def _server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"detail": "Internal error. The controller log has the details", "code": "internal_error"},
        status=500,
    )


handler404 = _not_found
handler500 = _server_error

urlpatterns = [
    path("api/", api.urls),
    path("api-doc", swagger.api_doc, name="api-doc"),
    path("swagger-ui/", swagger.swagger_ui, name="swagger-ui"),
    path("swagger-ui/init.js", swagger.swagger_init),
    path("swagger-ui/oauth2-redirect.html", swagger.oauth2_redirect),
    path("swagger-ui/static/<str:name>", swagger.swagger_static),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("", include("netsody_controller.dashboard.urls")),
]

# Benchmark baseline only: `benchmarks/controller_bench.py` sets this variable so that the same
# server also returns a fixed document, to compare with the real config endpoint in one run.
_static_file = os.environ.get("NETSODY_BENCHMARK_STATIC_FILE", "")
if _static_file:
    _static_body = Path(_static_file).read_bytes()

    async def _static_document(request: HttpRequest) -> HttpResponse:
        return HttpResponse(_static_body, content_type="application/json")

    urlpatterns.append(path("benchmark/static", _static_document))
