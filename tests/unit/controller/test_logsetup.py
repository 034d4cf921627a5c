"""Log lines: JSON in production with the request context, text in development."""

from __future__ import annotations

import json
import logging

from netsody_controller.logsetup import (
    NODE_ID,
    REQUEST_ID,
    USER_ID,
    ContextFilter,
    JsonFormatter,
    TextFormatter,
)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "netsody_controller.test", logging.INFO, __file__, 1, "node %s", ("added",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    ContextFilter().filter(record)
    return record


def test_json_line_carries_request_context():
    request_token = REQUEST_ID.set("req-1")
    user_token = USER_ID.set(None)
    node_token = NODE_ID.set("ab" * 32)
    try:
        line = JsonFormatter().format(_record(network_id="n-1"))
    finally:
        REQUEST_ID.reset(request_token)
        USER_ID.reset(user_token)
        NODE_ID.reset(node_token)
    entry = json.loads(line)
    assert entry["message"] == "node added"
    assert entry["level"] == "INFO"
    assert entry["request_id"] == "req-1"
    assert entry["node_id"] == "ab" * 32
    assert entry["network_id"] == "n-1"
    assert "user_id" not in entry
    assert "\n" not in line


def test_text_line_lists_fields():
    line = TextFormatter().format(_record(network_id="n-1"))
    assert "node added" in line
    assert "network_id=n-1" in line
