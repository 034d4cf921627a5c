"""The agent's UDP socket on loopback: segmented sends, joined receives, run boundaries."""

import socket

import pytest

from netsody_agent.dataplane import udp
from netsody_common.udpsend import run_end


@pytest.mark.parametrize(
    ("sizes", "runs"),
    [
        pytest.param([5, 5, 5], [3], id="equal"),
        pytest.param([5, 5, 3, 5], [3, 1], id="short-ends-run"),
        pytest.param([3, 5, 5], [1, 2], id="longer-starts-run"),
        pytest.param([1100] * 70, [59, 11], id="byte-limit"),
        pytest.param([10] * 70, [64, 6], id="segment-limit"),
    ],
)
def test_run_end_splits_by_size_and_limits(sizes, runs):
    datagrams = [bytes(size) for size in sizes]
    found = []
    start = 0
    while start < len(datagrams):
        end = run_end(datagrams, start)
        found.append(end - start)
        start = end

    assert found == runs


def receive_all(sock, count):
    received = []
    for _ in range(200):
        batch, error = sock.receive(64)
        assert error is None
        received += batch
        if len(received) >= count:
            break
    return received


def test_send_many_arrives_in_order_and_whole():
    receiver = udp.UdpSocket("127.0.0.1", 0)
    sender = udp.UdpSocket("127.0.0.1", 0)
    datagrams = [bytes([index]) * 1200 for index in range(40)] + [b"tail"]
    try:
        dropped = sender.send_many(datagrams, ("127.0.0.1", receiver.port))
        received = receive_all(receiver, len(datagrams))
    finally:
        receiver.close()
        sender.close()

    assert dropped == 0
    assert [data for data, _source in received] == datagrams
    assert {source for _data, source in received} == {("127.0.0.1", sender.port)}


def test_send_many_without_segmentation_sends_one_by_one():
    receiver = udp.UdpSocket("127.0.0.1", 0)
    sender = udp.UdpSocket("127.0.0.1", 0)
    sender.segmentation = False
    datagrams = [b"a" * 100, b"b" * 100, b"c" * 50]
    try:
        sender.send_many(datagrams, ("127.0.0.1", receiver.port))
        received = receive_all(receiver, len(datagrams))
    finally:
        receiver.close()
        sender.close()

    assert [data for data, _source in received] == datagrams


def test_receive_counts_datagrams_the_kernel_dropped():
    receiver = udp.UdpSocket("127.0.0.1", 0)
    sender = udp.UdpSocket("127.0.0.1", 0)
    receiver._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for _ in range(200):
            sender.send(bytes(1000), ("127.0.0.1", receiver.port))
        receive_all(receiver, 1)
        # The kernel reports the count with the first datagram queued after the drops.
        sender.send(b"after", ("127.0.0.1", receiver.port))
        received = receive_all(receiver, 1)
    finally:
        receiver.close()
        sender.close()

    assert received[-1][0] == b"after"
    assert receiver.overflows > 0
