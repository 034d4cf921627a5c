"""Operating netsody-sp: certificates, metrics, Alt-Svc, limits and bad input."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import pytest
from cryptography import x509

from netsody_common.wire import (
    Authenticated,
    ErrorCode,
    MessageReader,
    Rejected,
    encode_varint,
    signal_request_headers,
)


def h2_certificate_serial(kit: Any, port: int) -> int:
    context = kit.client_ssl_context()
    with (
        socket.create_connection(("127.0.0.1", port), kit.WAIT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def test_certificate_replaced_without_restart(
    kit: Any, superpeer: Any, clients: list, identities: list, tmp_path: Any
) -> None:
    old_serial = h2_certificate_serial(kit, superpeer.port)
    directory = superpeer.cert.parent
    _, _, new_serial = kit.write_certificate(directory)
    # Make the change visible even on file systems with coarse modification times.
    later = time.time() + 5
    os.utime(superpeer.cert, (later, later))
    os.utime(superpeer.key, (later, later))

    superpeer.wait_for_log("reloaded", timeout=20)

    assert h2_certificate_serial(kit, superpeer.port) == new_serial != old_serial
    client = await kit.open_client("h3", superpeer.port)
    clients.append(client)
    # aioquic's client keeps the server certificate in its TLS context only.
    assert client.protocol._quic.tls._peer_certificate.serial_number == new_serial
    channel = await client.signal(identities[0])
    assert isinstance(await channel.authenticate(), Authenticated)


def test_missing_certificate_awaited(kit: Any, start_superpeer: Any) -> None:
    superpeer = start_superpeer(certificate=False, wait=False)

    superpeer.wait_for_log("waiting for certificate files")
    assert superpeer.process.poll() is None
    kit.write_certificate(superpeer.cert.parent)
    kit.wait_listening(superpeer.port, superpeer.process, superpeer.log)

    assert superpeer.log_text().count("waiting for certificate files") == 1


def test_metrics_require_token(start_superpeer: Any) -> None:
    superpeer = start_superpeer(metrics=True, env={"PROMETHEUS_TOKEN": "s3cret-token"})

    assert superpeer.metrics()[0] == 401
    assert superpeer.metrics("wrong")[0] == 401
    status, text = superpeer.metrics("s3cret-token")

    assert status == 200
    assert 'netsody_sp_sessions{transport="h3"}' in text
    assert 'netsody_sp_relay_ports{state="free"} 8.0' in text
    assert "s3cret-token" not in superpeer.log_text()


async def test_metrics_without_token_count_sessions(
    start_superpeer: Any, kit: Any, clients: list, identities: list
) -> None:
    superpeer = start_superpeer(metrics=True)
    client = await kit.open_client("h2", superpeer.port)
    clients.append(client)
    channel = await client.signal(identities[0])
    assert isinstance(await channel.authenticate(), Authenticated)

    status, text = superpeer.metrics()

    assert status == 200
    assert 'netsody_sp_sessions{transport="h2"} 1.0' in text
    assert 'netsody_sp_authentications_total{result="ok"} 1.0' in text


async def test_alt_svc_flag_wins_over_environment(
    start_superpeer: Any, kit: Any, clients: list
) -> None:
    superpeer = start_superpeer("--alt-svc-port", "443", env={"NETSODY_SP_ALT_SVC_PORT": "444"})
    client = await kit.open_client("h2", superpeer.port)
    clients.append(client)

    _, response = await client.request(
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", b"/"),
        ]
    )

    assert response[b":status"] == b"200"
    assert response[b"alt-svc"] == b'h3=":443"; ma=86400'


async def test_oversize_message_rejected_others_unaffected(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    good = await kit.open_client("h3", superpeer.port)
    bad = await kit.open_client("h3", superpeer.port)
    clients.extend([good, bad])
    good_channel = await good.signal(identities[0])
    assert isinstance(await good_channel.authenticate(), Authenticated)
    bad_channel = await bad.signal(identities[1])

    bad_channel.send_raw(encode_varint(1 << 20) + b"x" * 100)
    answer = await bad_channel.receive()

    assert isinstance(answer, Rejected)
    assert answer.code == ErrorCode.MALFORMED
    good_channel.state.ping()
    good_channel.flush()
    assert type(await good_channel.receive()).__name__ == "Pong"


async def test_garbage_packets_do_not_disturb(
    kit: Any, superpeer: Any, clients: list, identities: list
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for size in (1, 20, 1200, 1500):
            udp.sendto(os.urandom(size), ("127.0.0.1", superpeer.port))
        udp.sendto(b"\xc0\x00\x00\x00\x01" + os.urandom(1300), ("127.0.0.1", superpeer.port))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", superpeer.port, ssl=kit.client_ssl_context(), server_hostname="localhost"
    )
    writer.write(b"this is not HTTP/2" * 10)
    assert await asyncio.wait_for(reader.read(), kit.WAIT) is not None
    writer.close()

    for transport in ("h3", "h2"):
        client = await kit.open_client(transport, superpeer.port)
        clients.append(client)
        channel = await client.signal(identities[0])
        assert isinstance(await channel.authenticate(), Authenticated)
    assert superpeer.process.poll() is None


async def test_connections_per_address_limited(
    kit: Any, start_superpeer: Any, clients: list
) -> None:
    superpeer = start_superpeer("--max-sessions-per-address", "2")
    for transport in ("h3", "h2"):
        clients.append(await kit.open_client(transport, superpeer.port))

    refused_h2 = await kit.open_h2(superpeer.port)
    clients.append(refused_h2)
    await asyncio.wait_for(refused_h2.terminated.wait(), kit.WAIT)
    with pytest.raises((ConnectionError, TimeoutError)):
        clients.append(await kit.open_h3(superpeer.port))

    superpeer.wait_for_log("limit of 2 connections per address")


def test_start_and_stop_logged(superpeer: Any) -> None:
    superpeer.process.terminate()
    superpeer.process.wait(10)

    text = superpeer.log_text()
    assert "netsody-sp 0.1.0 started" in text
    assert "netsody-sp stopped" in text
    assert superpeer.process.returncode == 0


async def test_stop_with_open_http3_session_is_clean(
    kit: Any, superpeer: Any, clients: list
) -> None:
    """Stopping used to raise a TypeError from closing HTTP/3 connections without a reason."""
    clients.append(await kit.open_h3(superpeer.port))

    superpeer.process.terminate()
    await asyncio.to_thread(superpeer.process.wait, 10)

    text = superpeer.log_text()
    assert "Traceback" not in text
    assert "netsody-sp stopped" in text
    assert superpeer.process.returncode == 0


def test_invalid_flag_reported(start_superpeer: Any, tmp_path: Any) -> None:
    superpeer = start_superpeer("--proxy-ports", "9-2", wait=False)

    assert superpeer.process.wait(20) == 2
    assert "--proxy-ports: '9-2' is not a port range" in superpeer.log_text()


async def test_silent_signaling_stream_times_out(
    kit: Any, start_superpeer: Any, clients: list, identities: list
) -> None:
    superpeer = start_superpeer("--auth-timeout", "1")
    client = await kit.open_client("h2", superpeer.port)
    clients.append(client)
    stream, response = await client.request(signal_request_headers("localhost"))
    assert response[b":status"] == b"200"
    reader = MessageReader()

    received = []
    while not any(isinstance(m, Rejected) for m in received):
        received.extend(reader.feed(await asyncio.wait_for(stream.data.get(), kit.WAIT)))

    assert received[-1].code == ErrorCode.AUTHENTICATION_TIMEOUT
    await asyncio.wait_for(client.terminated.wait(), kit.WAIT)


async def test_half_open_tcp_closed(start_superpeer: Any, kit: Any) -> None:
    superpeer = start_superpeer("--handshake-timeout", "1")
    reader, writer = await asyncio.open_connection("127.0.0.1", superpeer.port)
    try:
        assert await asyncio.wait_for(reader.read(), kit.WAIT) == b""
    finally:
        writer.close()
