"""URL routes: the API, its OpenAPI document and Swagger UI, and the health checks."""

from django.urls import path

from netsody_controller import health, swagger
from netsody_controller.api import api

urlpatterns = [
    path("api/", api.urls),
    path("api-doc", swagger.api_doc, name="api-doc"),
    path("swagger-ui/", swagger.swagger_ui, name="swagger-ui"),
    path("swagger-ui/init.js", swagger.swagger_init),
    path("swagger-ui/oauth2-redirect.html", swagger.oauth2_redirect),
    path("swagger-ui/static/<str:name>", swagger.swagger_static),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]
