"""URL checks of the agent settings: malformed URLs raise SettingsError, never ValueError."""

from __future__ import annotations

import pytest

from netsody_agent.errors import SettingsError
from netsody_agent.settings import validate_http_url, validate_network_url

MALFORMED = ["http://[::1", "https://[zz]/x", "https://host:99999/x"]


@pytest.mark.parametrize("url", MALFORMED)
def test_network_url_malformed_rejected(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        validate_network_url(url)
    assert "is not a valid URL" in str(raised.value)


@pytest.mark.parametrize("url", MALFORMED)
def test_http_url_malformed_rejected(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        validate_http_url(url, option="--controller")
    assert str(raised.value).startswith("--controller")


def test_http_url_valid_kept() -> None:
    assert validate_http_url("https://c.example:8443/api/", option="--controller") == (
        "https://c.example:8443/api"
    )


def test_file_url_with_host_rejected() -> None:
    with pytest.raises(SettingsError) as raised:
        validate_network_url("file://tmp/x.toml")

    assert "file:///tmp/x.toml" in str(raised.value)


@pytest.mark.parametrize("url", ["file:///tmp/x.toml", "file://localhost/tmp/x.toml"])
def test_local_file_url_accepted(url: str) -> None:
    assert validate_network_url(url) == url
