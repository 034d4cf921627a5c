"""Mutual authentication of two agents on a peer QUIC connection (sans-I/O).

The acceptor (QUIC server) presents a self-signed certificate whose key is its Ed25519 identity
key. TLS 1.3 makes it prove possession of that key (CertificateVerify), and the dialer compares
the certificate's public key with the pk in its configuration.

aioquic only requests client certificates through a private flag, so the dialer proves its
identity inside the encrypted connection instead:

1. acceptor -> dialer, on the acceptor's first unidirectional stream: `HELLO_MAGIC` and a fresh
   32-byte nonce;
2. dialer -> acceptor, on the dialer's first unidirectional stream: `PROOF_MAGIC`, its raw public
   key (32 bytes), its proof-of-work nonce (8 bytes, big-endian) and an Ed25519 signature over
   `PROOF_CONTEXT || acceptor pk || acceptor nonce || dialer pk`;
3. acceptor -> dialer, same stream as 1: one byte `ACCEPTED`, then the stream ends.

The acceptor forwards no packet of the connection before step 2 verified; the dialer sends
packets only after step 3.
"""

from __future__ import annotations

import datetime
import secrets
import struct

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from netsody_common.errors import NetsodyError
from netsody_common.identity import Identity, verify_pow, verify_signature

ALPN = "netsody/1"
HELLO_MAGIC = b"NSDYH1"
PROOF_MAGIC = b"NSDYP1"
PROOF_CONTEXT = b"netsody-peer-auth-v1:"
ACCEPTED = b"\x01"
NONCE_SIZE = 32
HELLO_SIZE = len(HELLO_MAGIC) + NONCE_SIZE
PROOF_SIZE = len(PROOF_MAGIC) + 32 + 8 + 64

# QUIC application error codes used to close a peer connection (RFC 9000 section 20.2).
ERROR_NONE = 0x0
ERROR_AUTH_FAILED = 0x101
ERROR_NOT_PERMITTED = 0x102
ERROR_REPLACED = 0x103
ERROR_PROTOCOL = 0x104


class HandshakeError(NetsodyError):
    """The peer failed authentication; `code` is the QUIC application error to close with."""

    def __init__(self, message: str, code: int = ERROR_AUTH_FAILED) -> None:
        super().__init__(message)
        self.code = code


def identity_certificate(identity: Identity) -> x509.Certificate:
    """Build the self-signed certificate that carries `identity`'s Ed25519 key.

    The subject names the pk; validity spans 1 day back to 10 years ahead because no
    side checks it. The dialer trusts the key, never the certificate's name or dates.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.pk)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(identity.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(identity.private_key, None)
    )


def certificate_pk(certificate: x509.Certificate | None) -> str | None:
    """The hex Ed25519 public key of `certificate`, or None when it holds another key type."""
    if certificate is None:
        return None
    key = certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        return None
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def check_acceptor_certificate(certificate: x509.Certificate | None, expected_pk: str) -> None:
    """Raise `HandshakeError` unless the acceptor's certificate key is `expected_pk`."""
    # SECURITY: this comparison is the whole trust decision about the acceptor. TLS has already
    # verified that the acceptor holds the private key of this certificate.
    presented = certificate_pk(certificate)
    if presented != expected_pk:
        raise HandshakeError(
            f"peer presented key {presented or 'none'} but the configuration names {expected_pk}"
        )


def new_hello() -> tuple[bytes, bytes]:
    """Return (nonce, hello message) for the acceptor's first stream."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce, HELLO_MAGIC + nonce


def parse_hello(data: bytes) -> bytes:
    """Return the acceptor nonce from a hello message; raise `HandshakeError` when malformed."""
    if len(data) < HELLO_SIZE or not data.startswith(HELLO_MAGIC):
        raise HandshakeError("malformed hello from the acceptor", ERROR_PROTOCOL)
    return data[len(HELLO_MAGIC) : HELLO_SIZE]


def _signed_bytes(acceptor_pk: str, nonce: bytes, dialer_pk: str) -> bytes:
    return PROOF_CONTEXT + bytes.fromhex(acceptor_pk) + nonce + bytes.fromhex(dialer_pk)


def build_proof(identity: Identity, *, acceptor_pk: str, nonce: bytes) -> bytes:
    """Build the dialer's proof message for the acceptor `acceptor_pk` and its `nonce`."""
    signature = identity.sign(_signed_bytes(acceptor_pk, nonce, identity.pk))
    return (
        PROOF_MAGIC + bytes.fromhex(identity.pk) + struct.pack("!Q", identity.pow_nonce) + signature
    )


def verify_proof(
    data: bytes,
    *,
    acceptor_pk: str,
    nonce: bytes,
    pow_difficulty: int,
) -> str:
    """Check a dialer's proof message and return the dialer's pk.

    Raises `HandshakeError` for a malformed message, a weak proof of work or a bad signature.
    Whether that pk may connect at all is the caller's decision.
    """
    if len(data) != PROOF_SIZE or not data.startswith(PROOF_MAGIC):
        raise HandshakeError(f"malformed proof of {len(data)} bytes", ERROR_PROTOCOL)
    offset = len(PROOF_MAGIC)
    dialer_pk = data[offset : offset + 32].hex()
    (pow_nonce,) = struct.unpack_from("!Q", data, offset + 32)
    signature = data[offset + 40 :]
    # SECURITY: the proof of work stops cheap throwaway identities; the signature binds the
    # dialer's key to this connection through the acceptor's fresh nonce.
    if not verify_pow(dialer_pk, pow_nonce, pow_difficulty):
        raise HandshakeError(f"peer {dialer_pk} has a proof of work below {pow_difficulty} bits")
    if not verify_signature(dialer_pk, _signed_bytes(acceptor_pk, nonce, dialer_pk), signature):
        raise HandshakeError(f"peer {dialer_pk} sent an invalid signature")
    return dialer_pk
