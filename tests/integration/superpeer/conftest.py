"""Fixtures for super peer tests: a self-signed certificate, a `netsody-sp` process, and
HTTP/3 (aioquic) and HTTP/2 (h2) test clients that speak the protocol with `netsody_common.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from netsody_common.identity import Identity
from netsody_common.selfsigned import self_signed_certificate, write_pem
from netsody_common.wire import (
    CAPSULE_DATAGRAM,
    Candidate,
    CapsuleReader,
    Message,
    SignalingClient,
    decode_bound_datagram,
    encode_bound_datagram,
    encode_datagram_capsule,
    encode_message,
    relay_request_headers,
    signal_request_headers,
)

POW_DIFFICULTY = 8
WAIT = 10.0  # seconds any single wait in these tests may take before it fails


# Certificates and identities ----------------------------------------------------------------


def write_certificate(directory: Path, name: str = "localhost") -> tuple[Path, Path, int]:
    """Write a self-signed certificate for localhost and 127.0.0.1; return paths and serial.

    Both files are replaced by a rename, so a running super peer that reloads them never reads
    a partly written file.
    """
    certificate, key = self_signed_certificate(
        name, dns_names=["localhost"], ip_addresses=["127.0.0.1"], days=1
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    write_pem(certificate, key, cert_path=cert_path, key_path=key_path)
    return cert_path, key_path, certificate.serial_number


@pytest.fixture(scope="session")
def identities() -> list[Identity]:
    return [Identity.generate(POW_DIFFICULTY, progress=False) for _ in range(4)]


def free_port() -> int:
    """Return a port that is free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port on 127.0.0.1")


def free_port_range(count: int) -> range:
    """Return `count` consecutive UDP ports free on 127.0.0.1 right now."""
    for _ in range(50):
        start = free_port()
        ports = range(start, start + count)
        if ports.stop > 65535:
            continue
        socks = []
        try:
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return ports
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range on 127.0.0.1")


# The super peer process ---------------------------------------------------------------------


@dataclass
class SuperPeer:
    """A running `netsody-sp` process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    proxy_ports: range
    cert: Path
    key: Path
    log: Path
    metrics_port: int | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the super peer log:\n{self.log_text()}")

    def metrics(self, token: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}/metrics")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"netsody-sp exited:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"netsody-sp did not listen on {port}:\n{log.read_text()}")


@pytest.fixture
def start_superpeer(tmp_path: Path) -> Iterator[Any]:
    """Factory: start `netsody-sp` with extra flags and environment; stopped at teardown."""
    started: list[SuperPeer] = []

    def start(
        *extra: str,
        env: dict[str, str] | None = None,
        proxy_count: int = 8,
        metrics: bool = False,
        wait: bool = True,
        certificate: bool = True,
    ) -> SuperPeer:
        directory = tmp_path / f"sp{len(started)}"
        directory.mkdir()
        if certificate:
            cert, key, _ = write_certificate(directory)
        else:
            cert, key = directory / "fullchain.pem", directory / "privkey.pem"
        port = free_port()
        proxy_ports = free_port_range(proxy_count)
        environment = dict(os.environ, NETSODY_POW_DIFFICULTY=str(POW_DIFFICULTY))
        environment.pop("PROMETHEUS_TOKEN", None)
        metrics_port = free_port() if metrics else None
        if metrics_port:
            environment["NETSODY_PROMETHEUS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        environment.update(env or {})
        log = directory / "netsody-sp.log"
        command = [
            sys.executable,
            "-m",
            "netsody_superpeer.cli",
            "--listen",
            f"127.0.0.1:{port}",
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--proxy-public-addresses",
            "127.0.0.1",
            "--proxy-ports",
            f"{proxy_ports.start}-{proxy_ports.stop - 1}",
            "--log-level",
            "DEBUG",
            *extra,
        ]
        with log.open("wb") as output:
            process = subprocess.Popen(command, env=environment, stdout=output, stderr=output)
        peer = SuperPeer(process, port, proxy_ports, cert, key, log, metrics_port)
        started.append(peer)
        if wait:
            wait_listening(port, process, log)
        return peer

    yield start
    for peer in started:
        if peer.process.poll() is None:
            peer.process.terminate()
            try:
                peer.process.wait(10)
            except subprocess.TimeoutExpired:
                peer.process.kill()
                peer.process.wait()


@pytest.fixture
def superpeer(start_superpeer: Any) -> SuperPeer:
    return start_superpeer()


# Test clients -------------------------------------------------------------------------------


@dataclass
class Stream:
    """One request stream of a test client."""

    stream_id: int
    response: asyncio.Future[dict[bytes, bytes]]
    data: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    datagrams: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    capsules: CapsuleReader = field(default_factory=CapsuleReader)

    def on_data(self, data: bytes, *, capsules: bool) -> None:
        if not capsules:
            self.data.put_nowait(data)
            return
        for capsule_type, value in self.capsules.feed(data):
            if capsule_type == CAPSULE_DATAGRAM:
                self.datagrams.put_nowait(value)


class Client:
    """Transport-independent part of the test clients."""

    transport = ""

    def __init__(self) -> None:
        self.streams: dict[int, Stream] = {}
        self.relay_streams: set[int] = set()

    async def request(
        self, headers: list[tuple[bytes, bytes]], *, relay: bool = False
    ) -> tuple[Stream, dict[bytes, bytes]]:
        stream = self._open(headers)
        if relay:
            self.relay_streams.add(stream.stream_id)
        response = await asyncio.wait_for(stream.response, WAIT)
        return stream, response

    def _open(self, headers: list[tuple[bytes, bytes]]) -> Stream:
        raise NotImplementedError

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        raise NotImplementedError

    def send_datagram(self, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    async def signal(
        self, identity: Identity, candidates: tuple[Candidate, ...] = (), *, sign: Any = None
    ) -> SignalChannel:
        stream, response = await self.request(signal_request_headers("localhost"))
        assert response[b":status"] == b"200"
        channel = SignalChannel(
            self,
            stream,
            SignalingClient(identity.pk, identity.pow_nonce, sign or identity.sign, candidates),
        )
        return channel

    async def relay(self) -> tuple[dict[bytes, bytes], RelayChannel]:
        stream, response = await self.request(relay_request_headers("localhost"), relay=True)
        return response, RelayChannel(self, stream)

    async def close(self) -> None:
        raise NotImplementedError


class SignalChannel:
    """A signaling stream driven by `SignalingClient`."""

    def __init__(self, client: Client, stream: Stream, state: SignalingClient) -> None:
        self.client = client
        self.stream = stream
        self.state = state
        self.pending: list[Message] = []

    def flush(self) -> None:
        data = self.state.data_to_send()
        if data:
            self.client.send(self.stream.stream_id, data)

    async def receive(self) -> Message:
        while not self.pending:
            data = await asyncio.wait_for(self.stream.data.get(), WAIT)
            self.pending.extend(self.state.receive_data(data))
            self.flush()
        return self.pending.pop(0)

    async def authenticate(self) -> Message:
        return await self.receive()

    def send_raw(self, data: bytes) -> None:
        self.client.send(self.stream.stream_id, data)

    def send(self, message: Message) -> None:
        self.send_raw(encode_message(message))


class RelayChannel:
    """A bound CONNECT-UDP tunnel."""

    def __init__(self, client: Client, stream: Stream) -> None:
        self.client = client
        self.stream = stream

    def send(self, host: str, port: int, payload: bytes) -> None:
        self.client.send_datagram(self.stream.stream_id, encode_bound_datagram(host, port, payload))

    async def receive(self, wait: float = WAIT) -> tuple[str, int, bytes]:
        return decode_bound_datagram(await asyncio.wait_for(self.stream.datagrams.get(), wait))


class H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.owner: H3Client | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self.http.handle_event(event):
            if self.owner is None:
                continue  # events of the handshake, before the client object exists
            stream = self.owner.streams.get(getattr(http_event, "stream_id", -1))
            if stream is None:
                continue
            if isinstance(http_event, HeadersReceived) and not stream.response.done():
                stream.response.set_result(dict(http_event.headers))
            elif isinstance(http_event, DataReceived):
                if http_event.data:
                    stream.on_data(
                        http_event.data, capsules=stream.stream_id in self.owner.relay_streams
                    )
            elif isinstance(http_event, DatagramReceived):
                stream.datagrams.put_nowait(http_event.data)
            if getattr(http_event, "stream_ended", False):
                stream.ended.set()


class H3Client(Client):
    transport = "h3"

    def __init__(self, protocol: H3Protocol, context: Any) -> None:
        super().__init__()
        self.protocol = protocol
        self._context = context
        protocol.owner = self

    def _open(self, headers: list[tuple[bytes, bytes]]) -> Stream:
        stream_id = self.protocol._quic.get_next_available_stream_id()
        stream = Stream(stream_id, asyncio.get_running_loop().create_future())
        self.streams[stream_id] = stream
        self.protocol.http.send_headers(stream_id, headers)
        self.protocol.transmit()
        return stream

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.protocol.http.send_data(stream_id, data, end)
        self.protocol.transmit()

    def send_datagram(self, stream_id: int, payload: bytes) -> None:
        self.protocol.http.send_datagram(stream_id, payload)
        self.protocol.transmit()

    def send_capsule_datagram(self, stream_id: int, payload: bytes) -> None:
        self.send(stream_id, encode_datagram_capsule(payload))

    async def close(self) -> None:
        await self._context.__aexit__(None, None, None)


class H2Client(Client):
    transport = "h2"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20})
        self.conn.increment_flow_control_window(16 << 20)
        self.terminated = asyncio.Event()
        self.flush()
        self.task = asyncio.create_task(self._read())

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def _read(self) -> None:
        while True:
            data = await self.reader.read(65536)
            if not data:
                self.terminated.set()
                return
            for event in self.conn.receive_data(data):
                self._event(event)
            self.flush()

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.terminated.set()
            return
        stream = self.streams.get(getattr(event, "stream_id", -1))
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived) and not stream.response.done():
            stream.response.set_result({bytes(k): bytes(v) for k, v in event.headers})
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream.on_data(event.data, capsules=stream.stream_id in self.relay_streams)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            stream.ended.set()

    def _open(self, headers: list[tuple[bytes, bytes]]) -> Stream:
        stream_id = self.conn.get_next_available_stream_id()
        stream = Stream(stream_id, asyncio.get_running_loop().create_future())
        self.streams[stream_id] = stream
        self.conn.send_headers(stream_id, headers)
        self.flush()
        return stream

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(stream_id, data, end_stream=end)
        self.flush()

    def send_datagram(self, stream_id: int, payload: bytes) -> None:
        self.send(stream_id, encode_datagram_capsule(payload))

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def client_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the tests' certificate is self-signed
    context.set_alpn_protocols(["h2"])
    return context


async def open_h2(port: int) -> H2Client:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ssl_context(), server_hostname="localhost"
        ),
        WAIT,
    )
    return H2Client(reader, writer)


async def open_h3(port: int, local_port: int = 0) -> H3Client:
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=65536,
        max_datagram_size=1350,
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
    )
    context = connect(
        "127.0.0.1",
        port,
        configuration=configuration,
        create_protocol=H3Protocol,
        local_port=local_port,
    )
    protocol = await asyncio.wait_for(context.__aenter__(), WAIT)
    return H3Client(protocol, context)


class AgentRelay:
    """The agent's own HTTP/3 session (`SuperPeerSession`, with its relay fast path) on a UDP
    socket of its own, driven as the agent's data plane drives it."""

    def __init__(self, identity: Identity, port: int, cafile: Path) -> None:
        from netsody_agent.dataplane.superpeer import SuperPeerSession

        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.session = SuperPeerSession(
            f"https://localhost:{port}",
            ("127.0.0.1", port),
            identity,
            host_candidates=(),
            on_peer_candidates=lambda _pk, _candidates: None,
            on_relayed=lambda payload, source, _session: self.received.put_nowait(
                (payload, source)
            ),
            cafile=str(cafile),
        )
        self.sent: list[bytes] = []  # every UDP payload sent to the super peer, when recording
        self.recording = False
        self._timer: asyncio.TimerHandle | None = None
        self.loop.add_reader(self.sock.fileno(), self._readable)
        self.session.connect(self.loop.time())
        self.flush()

    async def wait_bound(self) -> tuple[str, int]:
        """Wait until the session is authenticated and its relay tunnel bound."""
        deadline = self.loop.time() + WAIT
        while not self.session.relay_addresses:
            if self.loop.time() > deadline or self.session.closed:
                raise AssertionError(f"relay tunnel not bound: {self.session.error}")
            await asyncio.sleep(0.02)
        return self.session.relay_addresses[0]

    def send(self, payload: bytes, target: tuple[str, int]) -> bool:
        sent = self.session.send_relayed(payload, target)
        self.flush()
        return sent

    def flush(self) -> None:
        session = self.session
        for data in session.datagrams(self.loop.time()):
            if self.recording:
                self.sent.append(data)
            with contextlib.suppress(BlockingIOError):
                self.sock.sendto(data, session.address)
        if session.timer_due:
            if self._timer is not None:
                self._timer.cancel()
            deadline = session.timer()
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.session.handle_timer(self.loop.time())
        self.flush()

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data, _addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            self.session.receive(data, self.loop.time())
        self.flush()

    def close(self) -> None:
        self.session.close()
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def open_client(transport: str, port: int) -> Client:
    return await (open_h3(port) if transport == "h3" else open_h2(port))


@pytest.fixture
def kit() -> Any:
    """This module: tests reach the clients and helpers through it (pytest's importlib mode
    does not let test modules import a conftest)."""
    return sys.modules[__name__]


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """A list that tests append their clients to; all are closed at teardown."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
