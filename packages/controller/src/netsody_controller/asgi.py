"""ASGI entry point (uvicorn runs `netsody_controller.asgi:application`)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netsody_controller.settings")

application = get_asgi_application()
