"""The Celery app of the controller: Redis broker, Django settings and Django's logging."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netsody_controller.settings")

app = Celery("netsody_controller")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["netsody_controller.networks", "netsody_controller.accounts"])


@setup_logging.connect
def _use_django_logging(**_: object) -> None:
    """Keep Celery from installing its own handlers, so Django's LOGGING applies."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
