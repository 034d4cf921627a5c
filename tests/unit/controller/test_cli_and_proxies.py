"""Worker count defaults and client addresses behind trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from netsody_controller.cli import default_workers
from netsody_controller.middleware import client_ip

TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("172.16.0.0/12"))


@pytest.mark.parametrize(("cores", "workers"), [(1, 3), (2, 5), (3, 7), (4, 8), (64, 8)])
def test_default_workers_from_cores(cores, workers):
    assert default_workers({}, cpu_count=cores) == workers


def test_web_concurrency_overrides():
    assert default_workers({"WEB_CONCURRENCY": "3"}, cpu_count=16) == 3


def test_web_concurrency_invalid():
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY='many' is not an integer"):
        default_workers({"WEB_CONCURRENCY": "many"}, cpu_count=2)


def test_forwarded_for_from_trusted_proxy():
    assert client_ip("172.18.0.5", "203.0.113.7", TRUSTED) == "203.0.113.7"


def test_forwarded_for_through_chain_of_trusted_proxies():
    assert client_ip("127.0.0.1", "198.51.100.1, 203.0.113.7, 172.18.0.2", TRUSTED) == (
        "203.0.113.7"
    )


def test_forwarded_for_ignored_from_untrusted_peer():
    assert client_ip("198.51.100.9", "10.0.0.1", TRUSTED) == "198.51.100.9"


def test_forwarded_for_garbage_falls_back_to_peer():
    assert client_ip("127.0.0.1", "not-an-ip", TRUSTED) == "127.0.0.1"


def test_no_header_gives_peer():
    assert client_ip("127.0.0.1", None, TRUSTED) == "127.0.0.1"
