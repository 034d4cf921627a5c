"""Signing keys and users of the development OpenID provider, persisted in its state directory."""

import json
import logging
import os
import secrets
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

logger = logging.getLogger(__name__)

KEYS_FILE = "signing-keys.json"
USERS_FILE = "users.json"
SUPPORTED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# The JWKS publishes the current key and the ones before it, so tokens signed before a rotation
# stay valid until they expire.
PUBLISHED_KEY_COUNT = 3


def _write_private_json(path: Path, document: Any) -> None:
    """Write `document` to `path` atomically, readable by the owner only."""
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=2)
    os.replace(temporary, path)


def generate_key(algorithm: str) -> Any:
    """Generate a signing key for `algorithm` with a random key id."""
    parameters: Any = {"kid": secrets.token_urlsafe(12), "use": "sig", "alg": algorithm}
    if algorithm == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters)
    if algorithm == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters)
    if algorithm == "EdDSA":
        return OKPKey.generate_key("Ed25519", parameters=parameters)
    raise ValueError(
        f"Unsupported signing algorithm {algorithm!r}; use one of {', '.join(SUPPORTED_ALGORITHMS)}"
    )


def _import_key(document: dict[str, Any]) -> Any:
    key_class: Any = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}[document["kty"]]
    return key_class.import_key(document)


class SigningKeys:
    """The provider's signing keys: the newest signs, the last few are published in the JWKS."""

    def __init__(self, state_dir: Path, algorithm: str) -> None:
        self._path = state_dir / KEYS_FILE
        self._lock = threading.Lock()
        self._keys: list[Any] = []
        if self._path.exists():
            document = json.loads(self._path.read_text(encoding="utf-8"))
            self._keys = [_import_key(entry) for entry in document["keys"]]
        if not self._keys or self._keys[-1].as_dict().get("alg") != algorithm:
            self.rotate(algorithm)
        else:
            logger.info("Loaded signing key", extra={"kid": self.current.kid})

    @property
    def current(self) -> Any:
        """The key that signs new tokens."""
        with self._lock:
            return self._keys[-1]

    @property
    def algorithm(self) -> str:
        """The JWS algorithm of the current key."""
        return str(self.current.as_dict()["alg"])

    def rotate(self, algorithm: str | None = None) -> Any:
        """Generate a new current key (same algorithm unless given) and persist the key set."""
        new_key = generate_key(algorithm or self.algorithm)
        with self._lock:
            self._keys = [*self._keys, new_key][-PUBLISHED_KEY_COUNT:]
            _write_private_json(
                self._path, {"keys": [key.as_dict(private=True) for key in self._keys]}
            )
        logger.info("Generated signing key", extra={"kid": new_key.kid})
        return new_key

    def jwks(self) -> dict[str, Any]:
        """Return the public JWKS document."""
        with self._lock:
            return {"keys": [key.as_dict(private=False) for key in self._keys]}

    def find(self, kid: str) -> Any | None:
        """Return the key with id `kid`, or None."""
        with self._lock:
            return next((key for key in self._keys if key.kid == kid), None)


@dataclass
class DevUser:
    """A user of the development provider, created on first sign-in."""

    subject: str
    email: str
    name: str
    email_verified: bool

    def claims(self) -> dict[str, Any]:
        """Return the user's standard claims (OpenID Connect Core 1.0, section 5.1)."""
        return {
            "sub": self.subject,
            "email": self.email,
            "email_verified": self.email_verified,
            "name": self.name,
            "preferred_username": self.email,
        }


class UserStore:
    """Users keyed by lower-case email address, saved to `users.json` on every change."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / USERS_FILE
        self._lock = threading.Lock()
        self._users: dict[str, DevUser] = {}
        if self._path.exists():
            document = json.loads(self._path.read_text(encoding="utf-8"))
            for entry in document["users"]:
                user = DevUser(**entry)
                self._users[user.email.lower()] = user

    def sign_in(self, email: str, *, name: str = "", email_verified: bool = True) -> DevUser:
        """Return the user with `email`, created when new, with name and verification updated.

        The subject stays the same across sign-ins and restarts, as at a real provider.
        """
        key = email.strip().lower()
        with self._lock:
            user = self._users.get(key)
            if user is None:
                user = DevUser(
                    subject=str(uuid.uuid4()),
                    email=email.strip(),
                    name=name.strip() or email.strip().split("@")[0],
                    email_verified=email_verified,
                )
                self._users[key] = user
                logger.info("Created user", extra={"subject": user.subject})
            else:
                user.email_verified = email_verified
                if name.strip():
                    user.name = name.strip()
            self._save_locked()
            return user

    def by_subject(self, subject: str) -> DevUser | None:
        """Return the user with `subject`, or None."""
        with self._lock:
            return next((user for user in self._users.values() if user.subject == subject), None)

    def _save_locked(self) -> None:
        _write_private_json(self._path, {"users": [asdict(user) for user in self._users.values()]})
