"""WSGI entry point, for servers without ASGI (the config long poll then holds a thread)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netsody_controller.settings")

application = get_wsgi_application()
