"""netsody_common.selfsigned: self-signed certificates and their PEM files."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netsody_common.selfsigned import self_signed_certificate, write_pem


def test_certificate_names_and_validity() -> None:
    certificate, key = self_signed_certificate(
        "example",
        dns_names=["localhost", "sp.example"],
        ip_addresses=["127.0.0.1", ipaddress.ip_address("::1")],
        days=3,
    )
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc

    assert common_name == "example"
    assert certificate.issuer == certificate.subject
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "sp.example"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert lifetime == datetime.timedelta(days=3, minutes=5)
    assert certificate.not_valid_before_utc < datetime.datetime.now(datetime.UTC)
    assert isinstance(key.curve, ec.SECP256R1)
    assert certificate.public_key() == key.public_key()
    certificate.verify_directly_issued_by(certificate)


def test_certificate_ca_has_basic_constraints() -> None:
    certificate, _ = self_signed_certificate("ca", days=1, ca=True)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)

    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length is None


def test_certificate_without_names_or_ca_has_no_extensions() -> None:
    certificate, _ = self_signed_certificate("localhost", days=1)

    assert len(certificate.extensions) == 0


def test_certificate_serials_differ() -> None:
    first, _ = self_signed_certificate("localhost", days=1)
    second, _ = self_signed_certificate("localhost", days=1)

    assert first.serial_number != second.serial_number


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"days": 0}, "days must be at least 1, got 0", id="zero-days"),
        pytest.param(
            {"days": 1, "ip_addresses": ["localhost"]},
            "'localhost' does not appear to be an IPv4 or IPv6 address",
            id="bad-ip",
        ),
    ],
)
def test_certificate_invalid_arguments_rejected(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        self_signed_certificate("localhost", **arguments)

    assert str(raised.value) == message


def test_write_pem_modes_and_contents(tmp_path) -> None:
    certificate, key = self_signed_certificate("127.0.0.1", ip_addresses=["127.0.0.1"], days=1)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"

    write_pem(certificate, key, cert_path=cert_path, key_path=key_path)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == certificate
    loaded_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert loaded_key.public_key() == key.public_key()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cert.pem", "key.pem"]
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)


def test_write_pem_replaces_existing_files(tmp_path) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    key_path.write_bytes(b"old key")
    key_path.chmod(0o644)
    cert_path.write_bytes(b"old certificate")
    certificate, key = self_signed_certificate("localhost", days=1)

    write_pem(certificate, key, cert_path=cert_path, key_path=key_path)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == certificate


def test_write_pem_missing_directory_leaves_nothing(tmp_path) -> None:
    certificate, key = self_signed_certificate("localhost", days=1)
    directory = tmp_path / "missing"

    with pytest.raises(FileNotFoundError):
        write_pem(
            certificate, key, cert_path=directory / "cert.pem", key_path=directory / "key.pem"
        )

    assert list(tmp_path.iterdir()) == []
