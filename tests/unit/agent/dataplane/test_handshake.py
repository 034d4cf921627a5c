"""Peer authentication between two in-memory QUIC endpoints with explicit time."""

from aioquic.buffer import Buffer
from aioquic.quic.packet import pull_quic_header

from netsody_agent.dataplane import handshake
from netsody_agent.dataplane.link import (
    STATE_CLOSED,
    STATE_HANDSHAKING,
    STATE_UP,
    PeerLink,
    server_configuration,
)

DIFFICULTY = 8


class Endpoint:
    """Collects what a link reports: packets, state changes and connection IDs."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.payloads: list[bytes] = []
        self.states: list[str] = []

    def process(self) -> None:
        self.link.process_events(
            lambda _link, payload: self.payloads.append(payload),
            lambda link: self.states.append(link.state),
            lambda _link, _cid, _issued: None,
        )


def connect(dialer_identity, acceptor_identity, *, expected_pk=None, permitted=None):
    """Run a dialer and an acceptor against each other until no datagram is left."""
    now = 1000.0
    dialer = Endpoint(
        PeerLink.dial(
            dialer_identity,
            expected_pk or acceptor_identity.pk,
            now=now,
            pow_difficulty=DIFFICULTY,
        )
    )
    first = dialer.link.datagrams(now)
    header = pull_quic_header(Buffer(data=first[0]), host_cid_length=8)
    config = server_configuration(
        acceptor_identity, handshake.identity_certificate(acceptor_identity)
    )
    acceptor = Endpoint(
        PeerLink.accept(
            acceptor_identity,
            config,
            original_destination_connection_id=header.destination_cid,
            pow_difficulty=DIFFICULTY,
            is_permitted=permitted or (lambda pk: pk == dialer_identity.pk),
        )
    )
    in_flight = [(acceptor, data) for data in first]
    for _ in range(50):
        if not in_flight:
            break
        now += 0.001
        for target, data in in_flight:
            target.link.receive(data, now)
            target.process()
        in_flight = [(acceptor, data) for data in dialer.link.datagrams(now)]
        in_flight += [(dialer, data) for data in acceptor.link.datagrams(now)]
    return dialer, acceptor


def test_handshake_authenticates_both_sides(identities):
    dialer, acceptor = connect(identities[0], identities[1])

    assert dialer.link.state == STATE_UP
    assert acceptor.link.state == STATE_UP
    assert acceptor.link.peer_pk == identities[0].pk
    assert dialer.link.last_handshake is not None


def test_datagram_reaches_acceptor_after_handshake(identities):
    dialer, acceptor = connect(identities[0], identities[1])

    dialer.link.send_payload(b"packet")
    for data in dialer.link.datagrams(2000.0):
        acceptor.link.receive(data, 2000.0)
    acceptor.process()

    assert acceptor.payloads == [b"packet"]


def test_wrong_acceptor_key_rejected(identities):
    # The dialer expects identities[2] but identities[1] accepts the connection.
    dialer, acceptor = connect(identities[0], identities[1], expected_pk=identities[2].pk)

    assert dialer.link.state == STATE_CLOSED
    assert STATE_UP not in acceptor.states
    assert "configuration names" in dialer.link.close_reason


def test_dialer_not_permitted_rejected(identities):
    dialer, acceptor = connect(identities[0], identities[1], permitted=lambda _pk: False)

    assert acceptor.link.state != STATE_UP
    assert dialer.link.state in (STATE_CLOSED, STATE_HANDSHAKING)
    assert "not permitted" in acceptor.link.close_reason


def test_bad_signature_rejected(identities):
    nonce, hello = handshake.new_hello()
    proof = bytearray(
        handshake.build_proof(identities[0], acceptor_pk=identities[1].pk, nonce=nonce)
    )
    proof[-1] ^= 0x01

    try:
        handshake.verify_proof(
            bytes(proof), acceptor_pk=identities[1].pk, nonce=nonce, pow_difficulty=DIFFICULTY
        )
    except handshake.HandshakeError as error:
        message = str(error)
    else:
        message = ""

    assert hello.startswith(handshake.HELLO_MAGIC)
    assert message == f"peer {identities[0].pk} sent an invalid signature"


def test_proof_for_other_acceptor_rejected(identities):
    nonce, _hello = handshake.new_hello()
    proof = handshake.build_proof(identities[0], acceptor_pk=identities[2].pk, nonce=nonce)

    try:
        handshake.verify_proof(
            proof, acceptor_pk=identities[1].pk, nonce=nonce, pow_difficulty=DIFFICULTY
        )
    except handshake.HandshakeError as error:
        rejected = "invalid signature" in str(error)
    else:
        rejected = False

    assert rejected


def test_weak_proof_of_work_rejected(identities):
    nonce, _hello = handshake.new_hello()
    proof = handshake.build_proof(identities[0], acceptor_pk=identities[1].pk, nonce=nonce)

    try:
        handshake.verify_proof(proof, acceptor_pk=identities[1].pk, nonce=nonce, pow_difficulty=40)
    except handshake.HandshakeError as error:
        message = str(error)
    else:
        message = ""

    assert message == f"peer {identities[0].pk} has a proof of work below 40 bits"


def test_certificate_carries_identity_key(identities):
    certificate = handshake.identity_certificate(identities[1])

    assert handshake.certificate_pk(certificate) == identities[1].pk


def test_fast_path_packet_opens_once(identities):
    dialer, acceptor = connect(identities[0], identities[1])
    packet = bytes(range(256)) * 4

    sealed = dialer.link.seal_datagram(packet)

    assert acceptor.link.open_datagram(sealed) == packet
    assert acceptor.link.open_datagram(sealed) == b""
    assert acceptor.link.stats.drops == {"replay": 1}


def test_fast_path_packet_tampered_rejected(identities):
    dialer, acceptor = connect(identities[0], identities[1])
    sealed = bytearray(dialer.link.seal_datagram(b"x" * 100))
    sealed[-1] ^= 0x01

    assert acceptor.link.open_datagram(bytes(sealed)) is None


def test_fast_path_packet_accepted_by_aioquic(identities):
    # The sealed packet is a valid QUIC packet of the connection for a generic receiver too.
    dialer, acceptor = connect(identities[0], identities[1])

    acceptor.link.receive(dialer.link.seal_datagram(b"generic"), 2000.0)
    acceptor.process()

    assert acceptor.payloads == [b"generic"]


def test_ack_handled_with_earlier_time_keeps_loss_timer_after_send(identities):
    # A data plane takes `now` once per batch of packets, so a reply read later in a batch can
    # carry an earlier time than the packet it acknowledges was sent with.
    sent_at, batch_started = 1000.0, 999.9
    dialer = Endpoint(
        PeerLink.dial(identities[0], identities[1].pk, now=sent_at, pow_difficulty=DIFFICULTY)
    )
    first = dialer.link.datagrams(sent_at)
    header = pull_quic_header(Buffer(data=first[0]), host_cid_length=8)
    config = server_configuration(identities[1], handshake.identity_certificate(identities[1]))
    acceptor = PeerLink.accept(
        identities[1],
        config,
        original_destination_connection_id=header.destination_cid,
        pow_difficulty=DIFFICULTY,
        is_permitted=lambda _pk: True,
    )
    for data in first:
        acceptor.receive(data, sent_at)
    for data in acceptor.datagrams(sent_at):
        dialer.link.receive(data, batch_started)
    dialer.process()

    timer = dialer.link.connection.get_timer()

    assert timer is not None
    assert timer > sent_at
