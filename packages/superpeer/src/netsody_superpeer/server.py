"""Assembles and runs one super peer: listeners, certificate watcher, timers and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from netsody_common.identity import pow_difficulty_from_env
from netsody_superpeer import __version__
from netsody_superpeer.certs import CertificateStore
from netsody_superpeer.config import Settings
from netsody_superpeer.h2server import start_h2
from netsody_superpeer.h3server import quic_configuration, start_h3
from netsody_superpeer.http import RequestRouter
from netsody_superpeer.hub import Hub
from netsody_superpeer.metrics import MetricsServer, Stats
from netsody_superpeer.relay import Relay

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 2.0


async def run(settings: Settings) -> None:
    """Run the super peer until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    stats = Stats()
    metrics: MetricsServer | None = None
    if settings.prometheus_listen is not None:
        metrics = MetricsServer(stats, settings.prometheus_token)
        await metrics.start(*settings.prometheus_listen)

    quic = quic_configuration()
    certs = CertificateStore(settings.cert, settings.key, quic, poll=settings.cert_poll_interval)
    waiting = asyncio.create_task(certs.wait_until_loaded())
    await asyncio.wait(
        [waiting, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    if stop.is_set():
        waiting.cancel()
        logger.info("netsody-sp stopped before the certificate appeared")
        return

    relay = Relay(
        settings.proxy_public_addresses,
        settings.proxy_ports,
        stats,
        pps=settings.relay_pps,
        bps=settings.relay_bps,
        total_bps=settings.relay_total_bps,
    )
    hub = Hub(settings, stats, relay, pow_difficulty_from_env())
    router = RequestRouter(hub, settings.alt_svc_port)
    udp, quic_server = await start_h3(
        settings.listen_host, settings.listen_port, quic, hub=hub, router=router
    )
    tcp = await start_h2(
        settings.listen_host, settings.listen_port, certs.ssl, hub=hub, router=router
    )
    if not relay.enabled:
        logger.warning("relay disabled: set --proxy-public-addresses to enable it")
    logger.info(
        "netsody-sp %s started: HTTP/3 on udp %s:%d, HTTP/2 on tcp %s:%d, relay ports %d-%d "
        "on %s, proof-of-work difficulty %d",
        __version__,
        settings.listen_host,
        settings.listen_port,
        settings.listen_host,
        settings.listen_port,
        settings.proxy_ports.start,
        settings.proxy_ports.stop - 1,
        ",".join(map(str, settings.proxy_public_addresses)) or "none",
        hub.pow_difficulty,
    )
    tasks = [asyncio.create_task(certs.watch()), asyncio.create_task(_sweep(hub))]
    try:
        await stop.wait()
    finally:
        logger.info("netsody-sp stopping")
        hub.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0.1)  # let the rejections go out
        quic_server.close()
        udp.close()
        tcp.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tcp.wait_closed(), 2.0)
        if metrics is not None:
            await metrics.stop()
        logger.info("netsody-sp stopped")


async def _sweep(hub: Hub) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        try:
            hub.sweep(loop.time())
        except Exception:
            logger.exception("sweep of sessions and tunnels failed")
