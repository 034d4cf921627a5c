"""Self-signed ECDSA P-256 certificates for development servers and tests.

A super peer run by `hatch run dev`, the super peers and HTTPS servers of the tests, and the
in-memory QUIC handshakes all need a certificate that no public CA issued. This module builds
one and writes it as PEM files that `ssl.SSLContext.load_cert_chain`, aioquic and `netsody-sp
--cert/--key` read.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Backdating the start of validity lets a peer whose clock runs a little behind accept a
# certificate made a moment ago.
CLOCK_SKEW = datetime.timedelta(minutes=5)

IPAddressLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address


def self_signed_certificate(
    common_name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IPAddressLike] = (),
    days: int,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Generate a P-256 key and a certificate for it, signed by itself with SHA-256.

    The subject and issuer are `common_name`. The certificate is valid from 5 minutes ago for
    `days` days and has a random serial number (`certificate.serial_number`). A subjectAltName
    extension lists the DNS names, then the IP addresses, in the given order; with neither it is
    left out. With `ca` the certificate carries a critical basicConstraints extension that marks
    it as a CA. Without `ca` it has no basicConstraints extension at all.

    Raises `ValueError` when `days` is less than 1 or an IP address is not valid.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    addresses = [ipaddress.ip_address(address) for address in ip_addresses]
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(address) for address in addresses]

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(key, hashes.SHA256()), key


def write_pem(
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    *,
    cert_path: Path,
    key_path: Path,
) -> None:
    """Write the certificate and its key as PEM files, the key first.

    The key is unencrypted PKCS #8 with mode 0600, and the certificate gets mode 0644. Each file
    is written to a temporary file in its directory and renamed over the target, so a server
    that reloads its certificate reads either the old file or the new one, never a partial one.
    The directories must exist. Raises `OSError` when a file cannot be written.
    """
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _replace_file(key_path, key_bytes, mode=0o600)
    _replace_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _replace_file(path: Path, data: bytes, *, mode: int) -> None:
    # SECURITY: mkstemp creates the file with mode 0600, so the key is never readable by others,
    # not even between creating the file and writing it.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
