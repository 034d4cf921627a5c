"""The TLS certificate shared by the HTTP/3 and HTTP/2 listeners, reloaded when it changes.

Certbot replaces `fullchain.pem` and `privkey.pem` in place (through symlinks), so the store polls
the modification times and loads a new pair into the live QUIC configuration and SSL context.
Connections opened afterwards use the new certificate; open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from aioquic.quic.configuration import QuicConfiguration

from netsody_superpeer.errors import CertificateError
from netsody_superpeer.logutil import warn_repeated

logger = logging.getLogger(__name__)


class CertificateStore:
    """Owns the QUIC configuration's certificate and the HTTP/2 SSL context."""

    def __init__(self, cert: Path, key: Path, quic: QuicConfiguration, *, poll: float) -> None:
        self.cert = cert
        self.key = key
        self.quic = quic
        self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ssl.set_alpn_protocols(["h2"])
        self._poll = poll
        self._stamp: tuple[int, int] | None = None

    def _mtimes(self) -> tuple[int, int] | None:
        try:
            return (self.cert.stat().st_mtime_ns, self.key.stat().st_mtime_ns)
        except OSError:
            return None

    def _load(self) -> None:
        fresh = QuicConfiguration(is_client=False)
        try:
            fresh.load_cert_chain(self.cert, self.key)
            self.ssl.load_cert_chain(self.cert, self.key)
        except (OSError, ValueError, ssl.SSLError, TypeError) as exc:
            raise CertificateError(
                f"cannot load certificate {self.cert} with key {self.key}: {exc}"
            ) from exc
        self.quic.certificate = fresh.certificate
        self.quic.certificate_chain = fresh.certificate_chain
        self.quic.private_key = fresh.private_key

    def reload_if_changed(self) -> bool:
        """Load the files when their modification times changed; return True after a load."""
        stamp = self._mtimes()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            self._load()
        except CertificateError as exc:
            warn_repeated(logger, "cert_load", "%s; keeping the previous certificate", exc)
            return False
        first = self._stamp is None
        self._stamp = stamp
        logger.info("certificate %s %s", self.cert, "loaded" if first else "reloaded")
        return True

    async def wait_until_loaded(self) -> None:
        """Wait until both files exist and load, logging once what is missing."""
        if self.reload_if_changed():
            return
        missing = [str(p) for p in (self.cert, self.key) if not p.exists()]
        if missing:
            logger.warning("waiting for certificate files: %s missing", ", ".join(missing))
        while True:
            await asyncio.sleep(min(self._poll, 1.0))
            if self.reload_if_changed():
                return

    async def watch(self) -> None:
        """Poll for replaced files forever."""
        while True:
            await asyncio.sleep(self._poll)
            self.reload_if_changed()
