"""Liveness (`/healthz`) and readiness (`/readyz`: database and Redis reachable)."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECS = 2


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        return f"database unreachable: {error.__class__.__name__}"
    return None


def _check_redis() -> str | None:
    if not settings.REDIS_URL:
        return None
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=REDIS_TIMEOUT_SECS,
            socket_connect_timeout=REDIS_TIMEOUT_SECS,
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as error:
        return f"redis unreachable: {error.__class__.__name__}"
    return None


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "redis": _check_redis()}
    failed = {name: problem for name, problem in checks.items() if problem}
    if failed:
        logger.warning("readiness check failed", extra={"problems": failed})
        return JsonResponse(
            {"detail": "; ".join(failed.values()), "code": "unavailable"}, status=503
        )
    return JsonResponse(
        {"status": "ok", "database": "ok", "redis": "ok" if settings.REDIS_URL else "disabled"}
    )
