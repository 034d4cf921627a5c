"""Logging of the controller: one line per event, JSON in production and text in development.

A context variable carries the request id and the authenticated user or node id of the request
being served, and a filter copies them onto every record, so a log line made deep in a service
still names its request.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

REQUEST_ID = contextvars.ContextVar[str | None]("netsody_request_id", default=None)
USER_ID = contextvars.ContextVar[str | None]("netsody_user_id", default=None)
NODE_ID = contextvars.ContextVar[str | None]("netsody_node_id", default=None)

# Attributes of every LogRecord. Anything else on a record came from `extra=` and is a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_CONTEXT_FIELDS = ("request_id", "user_id", "node_id")


class ContextFilter(logging.Filter):
    """Copy the request id and the user or node id of the current context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("request_id", REQUEST_ID), ("user_id", USER_ID), ("node_id", NODE_ID)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None
    }


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Format a record as readable text with the extra fields as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in _extra_fields(record).items())
        return f"{line} {fields}" if fields else line


def logging_config(*, level: str, json_lines: bool) -> dict[str, Any]:
    """Return the dictConfig for Django's LOGGING setting (Celery uses the same)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if json_lines else "text",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django logs every 4xx as a warning of its own. Our middleware logs requests once.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "ERROR"},
            "uvicorn.access": {"level": "WARNING"},
        },
    }
