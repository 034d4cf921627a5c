"""Identity: key pairs, proof of work, signatures and the key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from netsody_common.errors import NetsodyError
from netsody_common.identity import (
    DEFAULT_POW_DIFFICULTY,
    Identity,
    IdentityError,
    pow_difficulty_from_env,
    pow_leading_zero_bits,
    verify_pow,
    verify_signature,
)


@pytest.fixture
def identity(low_pow_difficulty: int) -> Identity:
    return Identity.generate(progress=False)


def test_generate_pk_is_lowercase_hex(identity: Identity) -> None:
    assert len(identity.pk) == 64
    assert identity.pk == identity.pk.lower()
    int(identity.pk, 16)


def test_generate_proof_meets_env_difficulty(identity: Identity, low_pow_difficulty: int) -> None:
    assert verify_pow(identity.pk, identity.pow_nonce, low_pow_difficulty)
    assert pow_leading_zero_bits(identity.pk, identity.pow_nonce) >= low_pow_difficulty


def test_generate_explicit_difficulty_overrides_env(low_pow_difficulty: int) -> None:
    identity = Identity.generate(12, progress=False)
    assert verify_pow(identity.pk, identity.pow_nonce, 12)


def test_generate_difficulty_zero_uses_nonce_zero() -> None:
    identity = Identity.generate(0, progress=False)
    assert identity.pow_nonce == 0
    assert verify_pow(identity.pk, 0, 0)


def test_verify_pow_wrong_nonce_rejected(identity: Identity, low_pow_difficulty: int) -> None:
    nonce = identity.pow_nonce + 1
    while pow_leading_zero_bits(identity.pk, nonce) >= low_pow_difficulty:
        nonce += 1
    assert not verify_pow(identity.pk, nonce, low_pow_difficulty)


def test_verify_pow_higher_difficulty_rejected(identity: Identity) -> None:
    bits = pow_leading_zero_bits(identity.pk, identity.pow_nonce)
    assert verify_pow(identity.pk, identity.pow_nonce, bits)
    assert not verify_pow(identity.pk, identity.pow_nonce, bits + 1)


def test_verify_pow_other_pk_rejected(identity: Identity, low_pow_difficulty: int) -> None:
    other = Identity.generate(progress=False)
    nonce = identity.pow_nonce
    expected = pow_leading_zero_bits(other.pk, nonce) >= low_pow_difficulty
    assert verify_pow(other.pk, nonce, low_pow_difficulty) is expected


@pytest.mark.parametrize(
    ("pk", "nonce"),
    [
        pytest.param("zz" * 32, 0, id="non-hex-pk"),
        pytest.param("ab" * 31, 0, id="short-pk"),
        pytest.param("AB" * 32, 0, id="uppercase-pk"),
        pytest.param("ab" * 32, -1, id="negative-nonce"),
        pytest.param("ab" * 32, 2**64, id="nonce-over-64-bits"),
        pytest.param("ab" * 32, True, id="boolean-nonce"),
    ],
)
def test_verify_pow_malformed_input_rejected(pk: str, nonce: int) -> None:
    assert not verify_pow(pk, nonce, 0)


def test_verify_pow_difficulty_out_of_range_raises() -> None:
    with pytest.raises(IdentityError, match="difficulty=257 is out of range"):
        verify_pow("ab" * 32, 0, 257)


def test_pow_difficulty_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSODY_POW_DIFFICULTY", raising=False)
    assert pow_difficulty_from_env() == DEFAULT_POW_DIFFICULTY


def test_pow_difficulty_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETSODY_POW_DIFFICULTY", " 10 ")
    assert pow_difficulty_from_env() == 10


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "ten",
            "NETSODY_POW_DIFFICULTY='ten' is not an integer: "
            "set it to a number of leading zero bits from 0 to 256",
            id="not-an-integer",
        ),
        pytest.param(
            "300",
            "NETSODY_POW_DIFFICULTY=300 is out of range: use 0 to 256 leading zero bits",
            id="too-large",
        ),
        pytest.param(
            "-1",
            "NETSODY_POW_DIFFICULTY=-1 is out of range: use 0 to 256 leading zero bits",
            id="negative",
        ),
    ],
)
def test_pow_difficulty_invalid_env(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("NETSODY_POW_DIFFICULTY", value)
    with pytest.raises(IdentityError) as caught:
        pow_difficulty_from_env()
    assert str(caught.value) == message


def test_sign_verifies(identity: Identity) -> None:
    signature = identity.sign(b"netsody-pair:challenge")
    assert len(signature) == 64
    assert verify_signature(identity.pk, b"netsody-pair:challenge", signature)


def test_verify_signature_tampered_data_rejected(identity: Identity) -> None:
    signature = identity.sign(b"data")
    assert not verify_signature(identity.pk, b"date", signature)


def test_verify_signature_other_key_rejected(identity: Identity) -> None:
    other = Identity.generate(progress=False)
    assert not verify_signature(other.pk, b"data", identity.sign(b"data"))


@pytest.mark.parametrize(
    ("pk", "signature"),
    [
        pytest.param("xyz", b"\x00" * 64, id="malformed-pk"),
        pytest.param(None, b"\x00" * 64, id="pk-not-a-string"),
        pytest.param("ab" * 32, b"short", id="short-signature"),
    ],
)
def test_verify_signature_malformed_input_rejected(pk: str, signature: bytes) -> None:
    assert not verify_signature(pk, b"data", signature)


def test_repr_hides_private_key(identity: Identity) -> None:
    assert identity.secret_key_hex() not in repr(identity)
    assert identity.pk in repr(identity)


def test_generate_progress_written_to_stderr(
    low_pow_difficulty: int, capsys: pytest.CaptureFixture[str]
) -> None:
    Identity.generate(progress=True)
    captured = capsys.readouterr()
    assert "proof of work: found after" in captured.err
    assert captured.out == ""


def test_generate_without_progress_is_silent(
    low_pow_difficulty: int, capsys: pytest.CaptureFixture[str]
) -> None:
    Identity.generate(progress=False)
    Identity.generate()
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_save_load_round_trip(identity: Identity, tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.toml"
    identity.save(path)
    loaded = Identity.load(path)
    assert loaded.pk == identity.pk
    assert loaded.pow_nonce == identity.pow_nonce
    assert loaded.secret_key_hex() == identity.secret_key_hex()
    assert verify_signature(identity.pk, b"x", loaded.sign(b"x"))


def test_save_creates_mode_0600(identity: Identity, tmp_path: Path) -> None:
    path = tmp_path / "identity.toml"
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_creates_parent_mode_0700(identity: Identity, tmp_path: Path) -> None:
    path = tmp_path / "new" / "identity.toml"
    identity.save(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_save_replaces_existing_file(identity: Identity, tmp_path: Path) -> None:
    path = tmp_path / "identity.toml"
    Identity.generate(progress=False).save(path)
    identity.save(path)
    assert Identity.load(path).pk == identity.pk
    assert sorted(os.listdir(tmp_path)) == ["identity.toml"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_load_group_or_world_access_rejected(identity: Identity, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.toml"
    identity.save(path)
    path.chmod(mode)
    with pytest.raises(IdentityError) as caught:
        Identity.load(path)
    assert str(caught.value) == (
        f"identity file {path} has mode {mode:04o}, so group or others can access the "
        f"secret key: run `chmod 600 {path}`"
    )


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(IdentityError) as caught:
        Identity.load(path)
    assert str(caught.value) == f"identity file {path} not found"


def _write_private(path: Path, content: str) -> None:
    path.write_text(content, encoding="utf-8")
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(
            'secret_key = "00"\npow_nonce = 1\n',
            "secret_key must be 64 lowercase hex characters",
            id="short-secret",
        ),
        pytest.param(
            f'pow_nonce = 1\nsecret_key = "{"g" * 64}"\n',
            "secret_key must be 64 lowercase hex characters",
            id="non-hex-secret",
        ),
        pytest.param(
            f'secret_key = "{"a" * 64}"\n',
            "pow_nonce must be an integer from 0 to 18446744073709551615",
            id="missing-nonce",
        ),
        pytest.param(
            f'secret_key = "{"a" * 64}"\npow_nonce = "1"\n',
            "pow_nonce must be an integer from 0 to 18446744073709551615",
            id="nonce-as-string",
        ),
        pytest.param(
            f'secret_key = "{"a" * 64}"\npow_nonce = 1\nextra = 2\n',
            "unknown keys ['extra']",
            id="unknown-key",
        ),
    ],
)
def test_load_corrupt_file_rejected(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "identity.toml"
    _write_private(path, content)
    with pytest.raises(IdentityError) as caught:
        Identity.load(path)
    assert str(caught.value) == f"identity file {path} is corrupt: {reason}"


def test_load_invalid_toml_rejected(tmp_path: Path) -> None:
    path = tmp_path / "identity.toml"
    _write_private(path, "secret_key = \n")
    with pytest.raises(IdentityError, match=r"is corrupt: Invalid value \(at line 1, column 14\)"):
        Identity.load(path)


def test_load_binary_garbage_rejected(tmp_path: Path) -> None:
    path = tmp_path / "identity.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="is corrupt"):
        Identity.load(path)


def test_identity_error_is_netsody_error() -> None:
    assert issubclass(IdentityError, NetsodyError)
