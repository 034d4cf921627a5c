"""Node credentials: bearer secrets that agents present after pairing or joining.

A credential reads `nsn_<device id as 32 hex>_<generation>_<mac>`, where mac is the base64url
HMAC-SHA256 of the device id and generation under the controller secret. Nothing secret is
stored: the controller recomputes the MAC to verify, and revokes every credential of a device by
deleting the device or increasing its generation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from netsody_controller.caching import TtlCache

CREDENTIAL_PREFIX = "nsn_"
_MAC_CONTEXT = b"netsody node credential v1:"


@dataclass(frozen=True)
class ParsedCredential:
    """The device and generation named by a credential whose MAC matched."""

    device_id: uuid.UUID
    generation: int


def _mac(secret: bytes, device_id: uuid.UUID, generation: int) -> str:
    message = _MAC_CONTEXT + f"{device_id.hex}:{generation}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def derive_credential(secret: bytes, device_id: uuid.UUID, generation: int) -> str:
    """Return the node credential of a device at a generation."""
    return f"{CREDENTIAL_PREFIX}{device_id.hex}_{generation}_{_mac(secret, device_id, generation)}"


def looks_like_credential(token: str) -> bool:
    """Tell whether a bearer token has the node credential prefix (it may still be invalid)."""
    return token.startswith(CREDENTIAL_PREFIX)


def verify_credential(secret: bytes, token: str) -> ParsedCredential | None:
    """Return the device and generation of a credential whose MAC matches, else None."""
    if not looks_like_credential(token):
        return None
    parts = token[len(CREDENTIAL_PREFIX) :].split("_", 2)
    if len(parts) != 3:
        return None
    device_hex, generation_text, mac = parts
    try:
        device_id = uuid.UUID(hex=device_hex)
        generation = int(generation_text)
    except ValueError:
        return None
    if device_id.hex != device_hex or generation < 0 or str(generation) != generation_text:
        return None
    # SECURITY: constant-time comparison, so timing does not leak how much of a guess matched.
    if not hmac.compare_digest(mac, _mac(secret, device_id, generation)):
        return None
    return ParsedCredential(device_id=device_id, generation=generation)


class CredentialVerifier:
    """Verify node credentials, remembering valid ones in a bounded TTL cache."""

    def __init__(self, secret: bytes, *, max_entries: int, ttl_secs: float) -> None:
        self._secret = secret
        self._cache: TtlCache[str, ParsedCredential] = TtlCache(
            max_entries=max_entries, ttl_secs=ttl_secs
        )

    def verify(self, token: str) -> ParsedCredential | None:
        """Return the parsed credential when its MAC matches. Callers still check the device."""
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        parsed = verify_credential(self._secret, token)
        if parsed is not None:
            self._cache.put(key, parsed)
        return parsed

    def forget_device(self, device_id: uuid.UUID) -> int:
        """Drop the cached credentials of a device (after it was removed or re-keyed)."""
        return self._cache.discard_where(lambda _key, parsed: parsed.device_id == device_id)
