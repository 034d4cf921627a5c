"""Hints in TUN device errors name the likely cause of each error number."""

from __future__ import annotations

import errno

from netsody_agent.tun import _hint


def test_busy_device_names_second_agent() -> None:
    hint = _hint(errno.EBUSY, "netsody", "default")
    assert "second agent" in hint
    assert "--device" in hint


def test_invalid_value_not_blamed_on_root() -> None:
    assert "root" not in _hint(errno.EINVAL, "netsody", "run as root")


def test_permission_error_keeps_default() -> None:
    assert _hint(errno.EPERM, "netsody", "run as root") == "run as root"
