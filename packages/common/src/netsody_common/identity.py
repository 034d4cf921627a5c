"""Node identity: an Ed25519 key pair with a proof of work, and its key file.

The public key, as 64 lowercase hex characters, is the node id. An identity is only accepted
when it carries a proof of work: a nonce such that SHA-256(public key bytes || nonce as an 8-byte
big-endian integer) starts with at least `difficulty` zero bits. The proof makes minting many
identities expensive, so a super peer or controller cannot be flooded with throwaway ids.

Key file format (UTF-8 TOML, written with mode 0600)::

    # Netsody identity: the secret key of this device. Keep this file private (mode 0600).
    secret_key = "<64 lowercase hex characters: the raw 32-byte Ed25519 private key>"
    pow_nonce = <the proof-of-work nonce, an integer from 0 to 2**64 - 1>

The public key is derived from the secret key, so the file cannot hold a mismatched pair.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from netsody_common.errors import NetsodyError

logger = logging.getLogger(__name__)

# 2**21 (about two million) SHA-256 evaluations expected. CPython's hashlib computed about one
# million per second on one core of an x86-64 VM (Python 3.11), so generation takes about two
# seconds there; this is an estimate for other cores. Each extra bit doubles the expected time.
DEFAULT_POW_DIFFICULTY = 21
POW_DIFFICULTY_ENV = "NETSODY_POW_DIFFICULTY"
MAX_POW_DIFFICULTY = 256
MAX_POW_NONCE = 2**64 - 1

PK_HEX_LENGTH = 64
_HEX_DIGITS = frozenset("0123456789abcdef")
_PROGRESS_INTERVAL = 1 << 18


class IdentityError(NetsodyError):
    """An identity, key file, public key or proof-of-work setting is invalid."""


def pow_difficulty_from_env() -> int:
    """Return the proof-of-work difficulty from `NETSODY_POW_DIFFICULTY`, else the default.

    Raises `IdentityError` when the variable is set but is not an integer from 0 to 256.
    """
    raw = os.environ.get(POW_DIFFICULTY_ENV, "").strip()
    if not raw:
        return DEFAULT_POW_DIFFICULTY
    try:
        value = int(raw)
    except ValueError:
        raise IdentityError(
            f"{POW_DIFFICULTY_ENV}={raw!r} is not an integer: "
            f"set it to a number of leading zero bits from 0 to {MAX_POW_DIFFICULTY}"
        ) from None
    _check_difficulty(value, source=POW_DIFFICULTY_ENV)
    return value


def _check_difficulty(difficulty: int, *, source: str = "difficulty") -> None:
    if not 0 <= difficulty <= MAX_POW_DIFFICULTY:
        raise IdentityError(
            f"{source}={difficulty} is out of range: "
            f"use 0 to {MAX_POW_DIFFICULTY} leading zero bits"
        )


def is_valid_pk(pk: str) -> bool:
    """Return whether `pk` is 64 lowercase hex characters (the form of a node id)."""
    return len(pk) == PK_HEX_LENGTH and _HEX_DIGITS.issuperset(pk)


def pk_to_bytes(pk: str) -> bytes:
    """Decode a hex public key into its 32 raw bytes; raise `IdentityError` when malformed."""
    if not isinstance(pk, str) or not is_valid_pk(pk):
        raise IdentityError(f"public key {pk!r} is invalid: expected 64 lowercase hex characters")
    return bytes.fromhex(pk)


def _pow_target(difficulty: int) -> bytes:
    # A digest has >= difficulty leading zero bits exactly when, read as a big-endian integer,
    # it is below 2**(256 - difficulty). Equal-length byte strings compare the same way, and
    # bytes comparison is faster than building an int per attempt. Valid for difficulty >= 1.
    return (1 << (256 - difficulty)).to_bytes(32, "big")


def _pow_digest(pk_bytes: bytes, nonce: int) -> bytes:
    return hashlib.sha256(pk_bytes + nonce.to_bytes(8, "big")).digest()


def pow_leading_zero_bits(pk: str, nonce: int) -> int:
    """Return the number of leading zero bits of the proof-of-work hash of `pk` and `nonce`."""
    if not 0 <= nonce <= MAX_POW_NONCE:
        return 0
    value = int.from_bytes(_pow_digest(pk_to_bytes(pk), nonce), "big")
    return 256 - value.bit_length()


def verify_pow(pk: str, nonce: int, difficulty: int) -> bool:
    """Return whether `nonce` is a proof of work of at least `difficulty` bits for `pk`.

    Returns False for a malformed pk or a nonce outside 0..2**64-1 instead of raising, because
    callers check values that arrive from the network.
    """
    if not isinstance(pk, str) or not is_valid_pk(pk):
        return False
    if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce <= MAX_POW_NONCE:
        return False
    _check_difficulty(difficulty)
    return pow_leading_zero_bits(pk, nonce) >= difficulty


def verify_signature(pk: str, data: bytes, signature: bytes) -> bool:
    """Return whether `signature` is a valid Ed25519 signature of `data` by the key `pk`.

    Returns False instead of raising for a malformed pk, signature or data type.
    """
    if not isinstance(pk, str) or not is_valid_pk(pk):
        return False
    try:
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pk))
        public_key.verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _find_pow_nonce(pk_bytes: bytes, difficulty: int, *, progress: TextIO | None) -> int:
    if difficulty == 0:
        return 0
    target = _pow_target(difficulty)
    prefix = hashlib.sha256(pk_bytes)
    started = time.monotonic()
    expected = 2**difficulty
    for nonce in range(MAX_POW_NONCE + 1):
        candidate = prefix.copy()
        candidate.update(nonce.to_bytes(8, "big"))
        if candidate.digest() < target:
            if progress is not None:
                progress.write(
                    f"\rproof of work: found after {nonce + 1:,} hashes "
                    f"in {time.monotonic() - started:.1f} s\n"
                )
                progress.flush()
            return nonce
        if progress is not None and nonce % _PROGRESS_INTERVAL == 0 and nonce:
            progress.write(
                f"\rproof of work ({difficulty} bits): {nonce:,} hashes, "
                f"about {expected:,} expected, {time.monotonic() - started:.1f} s"
            )
            progress.flush()
    raise IdentityError(f"no proof-of-work nonce of {difficulty} bits exists for this key")


@dataclass(frozen=True)
class Identity:
    """A node identity: the Ed25519 private key, its hex public key and the proof-of-work nonce.

    SECURITY: the private key is excluded from `repr()`, so logging an identity shows only the pk.
    """

    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    pow_nonce: int
    pk: str = field(init=False)

    def __post_init__(self) -> None:
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        object.__setattr__(self, "pk", raw.hex())

    @classmethod
    def generate(cls, difficulty: int | None = None, *, progress: bool | None = None) -> Identity:
        """Create a new key pair and search its proof-of-work nonce.

        `difficulty` defaults to `pow_difficulty_from_env()`. Progress lines go to stderr when
        `progress` is True, or when it is None and stderr is a terminal. CPU-bound: expect about
        2**difficulty SHA-256 evaluations.
        """
        if difficulty is None:
            difficulty = pow_difficulty_from_env()
        _check_difficulty(difficulty)
        show = sys.stderr.isatty() if progress is None else progress
        private_key = Ed25519PrivateKey.generate()
        pk_bytes = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        nonce = _find_pow_nonce(pk_bytes, difficulty, progress=sys.stderr if show else None)
        identity = cls(private_key=private_key, pow_nonce=nonce)
        logger.debug("generated identity pk=%s difficulty=%d", identity.pk, difficulty)
        return identity

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of `data`."""
        return self.private_key.sign(data)

    def secret_key_hex(self) -> str:
        """Return the raw private key as 64 hex characters (for the key file only)."""
        raw = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return raw.hex()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file atomically with mode 0600, creating missing parent directories (0700).

        Raises `IdentityError` when the file cannot be written.
        """
        target = Path(path)
        text = (
            "# Netsody identity: the secret key of this device. "
            "Keep this file private (mode 0600).\n"
            f'secret_key = "{self.secret_key_hex()}"\n'
            f"pow_nonce = {self.pow_nonce}\n"
        )
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise IdentityError(f"cannot write identity file {target}: {error}") from error

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key file written by `save`.

        Raises `IdentityError` when the file is missing, readable or writable by group or others
        (SECURITY: a leaked secret key lets anyone impersonate the node), or malformed.
        """
        source = Path(path)
        try:
            with source.open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                _check_key_file_mode(source, mode)
                content = handle.read()
        except FileNotFoundError:
            raise IdentityError(f"identity file {source} not found") from None
        except OSError as error:
            raise IdentityError(f"cannot read identity file {source}: {error}") from error
        return _parse_key_file(source, content)


def _check_key_file_mode(source: Path, mode: int) -> None:
    # SECURITY: refuse a key file that anyone but the owner may read or write.
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        raise IdentityError(
            f"identity file {source} has mode {stat.S_IMODE(mode):04o}, so group or others "
            f"can access the secret key: run `chmod 600 {source}`"
        )


def _parse_key_file(source: Path, content: bytes) -> Identity:
    try:
        data = tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise IdentityError(f"identity file {source} is corrupt: {error}") from error
    secret = data.get("secret_key")
    nonce = data.get("pow_nonce")
    if not isinstance(secret, str) or not is_valid_pk(secret):
        raise IdentityError(
            f"identity file {source} is corrupt: secret_key must be 64 lowercase hex characters"
        )
    if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce <= MAX_POW_NONCE:
        raise IdentityError(
            f"identity file {source} is corrupt: pow_nonce must be an integer "
            f"from 0 to {MAX_POW_NONCE}"
        )
    unknown = sorted(set(data) - {"secret_key", "pow_nonce"})
    if unknown:
        raise IdentityError(f"identity file {source} is corrupt: unknown keys {unknown}")
    private_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    return Identity(private_key=private_key, pow_nonce=nonce)
