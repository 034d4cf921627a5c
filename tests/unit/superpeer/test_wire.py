"""The super peer wire formats in netsody_common.wire: codecs, framing and fuzzing."""

from __future__ import annotations

import contextlib
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsody_common.identity import Identity, verify_signature
from netsody_common.wire import (
    MAX_MESSAGE_SIZE,
    Authenticate,
    Authenticated,
    Candidate,
    CandidateKind,
    CapsuleReader,
    Challenge,
    ConnectRequest,
    ErrorCode,
    MessageReader,
    PeerCandidates,
    PeerUnavailable,
    Ping,
    Pong,
    Rejected,
    SignalingClient,
    UpdateCandidates,
    WireError,
    auth_payload,
    decode_bound_datagram,
    decode_h3_datagram,
    decode_varint,
    encode_bound_datagram,
    encode_capsule,
    encode_datagram_capsule,
    encode_h3_datagram,
    encode_message,
    encode_varint,
    format_proxy_public_addresses,
    parse_proxy_public_addresses,
)

PK = "ab" * 32
CANDIDATES = (
    Candidate(CandidateKind.HOST, ip_address("192.168.1.20"), 41641),
    Candidate(CandidateKind.RELAY, ip_address("2001:db8::10"), 49152),
)
MESSAGES = [
    Challenge(b"c" * 32, 21),
    Authenticate(PK, 2**64 - 1, b"s" * 64, CANDIDATES),
    Authenticated(Candidate(CandidateKind.REFLEXIVE, ip_address("198.51.100.7"), 62001)),
    Authenticated(None),
    Rejected(ErrorCode.BAD_SIGNATURE, "signature über the challenge is invalid"),
    UpdateCandidates(()),
    ConnectRequest(7, PK),
    PeerCandidates(0, PK, CANDIDATES),
    PeerUnavailable(3, PK, ErrorCode.PEER_OFFLINE, "offline"),
    Ping(1),
    Pong(2**63),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_roundtrip_byte_by_byte(message: object) -> None:
    reader = MessageReader()
    decoded = []
    for byte in encode_message(message):  # type: ignore[arg-type]
        decoded.extend(reader.feed(bytes([byte])))

    assert decoded == [message]


def test_several_messages_in_one_chunk() -> None:
    data = b"".join(encode_message(m) for m in MESSAGES)

    assert MessageReader().feed(data) == MESSAGES


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (encode_varint(MAX_MESSAGE_SIZE + 1), "exceeds the maximum"),
        (b"\x00", "empty message"),
        (b"\x01\x3f", "unknown message type"),
        (b"\x02\x09\x00", "truncated field"),
        (encode_varint(12) + b"\x09" + b"\x00" * 11, "trailing bytes"),
        (encode_varint(36) + b"\x04\x00\x04" + encode_varint(32) + b"\xff" * 32, "not valid UTF-8"),
        (encode_varint(5) + b"\x04\x00\x63\x00" + b"\x00", "unknown error code"),
    ],
)
def test_malformed_message_rejected(data: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        MessageReader().feed(data)


def test_too_many_candidates_rejected() -> None:
    body = b"\x05" + encode_varint(65)
    with pytest.raises(WireError, match="65 candidates exceed"):
        MessageReader().feed(encode_varint(len(body)) + body)


@pytest.mark.parametrize("value", [0, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**62 - 1])
def test_varint_roundtrip(value: int) -> None:
    assert decode_varint(encode_varint(value)) == (value, len(encode_varint(value)))


def test_varint_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_varint(2**62)


def test_capsules_split_across_chunks() -> None:
    data = encode_datagram_capsule(b"payload") + encode_capsule(0x2A, b"unknown") + b"\x00"
    reader = CapsuleReader()

    first = reader.feed(data[:5])
    rest = reader.feed(data[5:])

    assert first + rest == [(0, b"payload"), (0x2A, b"unknown")]


def test_oversize_capsule_rejected() -> None:
    with pytest.raises(WireError, match="exceeds the maximum"):
        CapsuleReader(max_capsule_size=100).feed(encode_capsule(0, b"x" * 101))


@pytest.mark.parametrize("host", ["203.0.113.9", "2001:db8::1", "::1"])
def test_bound_datagram_roundtrip(host: str) -> None:
    assert decode_bound_datagram(encode_bound_datagram(host, 443, b"data")) == (host, 443, b"data")


@pytest.mark.parametrize(
    "data", [b"", b"\x01\x04" + b"\x00" * 6, b"\x00\x05" + b"\x00" * 6, b"\x00\x06" + b"\x00" * 10]
)
def test_malformed_bound_datagram_rejected(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_bound_datagram(data)


def test_h3_datagram_quarter_stream_id() -> None:
    assert decode_h3_datagram(encode_h3_datagram(400, b"x")) == (400, b"x")
    assert encode_h3_datagram(400, b"")[:2] == encode_varint(100)


def test_proxy_public_address_roundtrip() -> None:
    value = format_proxy_public_addresses([("203.0.113.10", 49152), ("2001:db8::10", 49152)])

    assert value == "203.0.113.10:49152, [2001:db8::10]:49152"
    assert parse_proxy_public_addresses(value) == [
        (ip_address("203.0.113.10"), 49152),
        (ip_address("2001:db8::10"), 49152),
    ]


@pytest.mark.parametrize("value", ["nonsense", "1.2.3.4:0", "1.2.3.4", "[::1]:x"])
def test_invalid_proxy_public_address_rejected(value: str) -> None:
    with pytest.raises(WireError, match="invalid proxy-public-address"):
        parse_proxy_public_addresses(value)


def test_signaling_client_answers_challenge() -> None:
    identity = Identity.generate(4, progress=False)
    client = SignalingClient(identity.pk, identity.pow_nonce, identity.sign, CANDIDATES[:1])

    seen = client.receive_data(encode_message(Challenge(b"n" * 32, 4)))
    [sent] = MessageReader().feed(client.data_to_send())

    assert seen == []
    assert isinstance(sent, Authenticate)
    assert sent.pk == identity.pk
    assert sent.candidates == CANDIDATES[:1]
    assert verify_signature(identity.pk, auth_payload(b"n" * 32, identity.pk), sent.signature)


def test_signaling_client_tracks_state() -> None:
    client = SignalingClient(PK, 0, lambda data: b"s" * 64)
    reflexive = Candidate(CandidateKind.REFLEXIVE, ip_address("198.51.100.7"), 1)

    client.receive_data(encode_message(Authenticated(reflexive)) + encode_message(Ping(5)))
    request_id = client.request_peer("cd" * 32)
    sent = MessageReader().feed(client.data_to_send())

    assert client.authenticated
    assert client.reflexive == reflexive
    assert sent == [Pong(5), ConnectRequest(request_id, "cd" * 32)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_message_reader_fuzz(chunks: list[bytes]) -> None:
    reader = MessageReader()
    for chunk in chunks:
        try:
            reader.feed(chunk)
        except WireError:
            return


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_capsule_reader_fuzz(chunks: list[bytes]) -> None:
    reader = CapsuleReader(max_capsule_size=1000)
    for chunk in chunks:
        try:
            reader.feed(chunk)
        except WireError:
            return


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_bound_datagram_fuzz(data: bytes) -> None:
    try:
        host, port, payload = decode_bound_datagram(data)
    except WireError:
        return
    assert 0 <= port < 65536
    assert encode_bound_datagram(host, port, payload) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_message_body_fuzz_with_valid_length(body: bytes) -> None:
    with contextlib.suppress(WireError):
        MessageReader().feed(encode_varint(len(body)) + body)
