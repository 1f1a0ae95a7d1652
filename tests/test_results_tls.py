"""TLS and mutual TLS on the results service, with certificates made in the test."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from results_support import TOKEN, make_result, service_config

from services.results.client import ResultsClient
from services.results.config import TlsConfig
from services.results.service import ResultsService
from services.results.store import IncomingResult


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_name: str, issuer_key, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, key=None, cert: x509.Certificate | None = None) -> str:
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    else:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a stranger CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _cert("hdm test CA", ca_key, "hdm test CA", ca_key, ca=True)
    other = _cert("someone else", other_key, "someone else", other_key, ca=True)
    return {
        "ca": _write(d / "ca.pem", cert=ca),
        "other_ca": _write(d / "other.pem", cert=other),
        "server_cert": _write(d / "server.pem", cert=_cert("localhost", server_key, "hdm test CA", ca_key, server=True)),
        "server_key": _write(d / "server.key", key=server_key),
        "client_cert": _write(d / "client.pem", cert=_cert("mes-client", client_key, "hdm test CA", ca_key)),
        "client_key": _write(d / "client.key", key=client_key),
    }


@contextlib.contextmanager
def _serve(tmp_path: Path, tls: TlsConfig) -> Iterator[ResultsService]:
    with ResultsService(service_config(f"sqlite:///{tmp_path}/tls.db", tls=tls)) as service:
        service.store.insert([IncomingResult(make_result("f-tls"))])
        yield service


def _fails(client: ResultsClient) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        client.get_result("f-tls")
    return info.value.code()


def test_tls_serves_trusting_clients_only(tmp_path, pki):
    with _serve(tmp_path, TlsConfig(cert_file=pki["server_cert"], key_file=pki["server_key"])) as service:
        target = f"127.0.0.1:{service.port}"
        with ResultsClient(target, token=TOKEN, ca_file=pki["ca"], timeout_s=5) as client:
            assert client.get_result("f-tls").frame_id == "f-tls"
            assert client.health() == "SERVING"
        with ResultsClient(target, token=TOKEN, timeout_s=5) as plaintext:
            assert _fails(plaintext) == grpc.StatusCode.UNAVAILABLE
        with ResultsClient(target, token=TOKEN, ca_file=pki["other_ca"], timeout_s=5) as distrustful:
            assert _fails(distrustful) == grpc.StatusCode.UNAVAILABLE
        with ResultsClient(target, token="wrong", ca_file=pki["ca"], timeout_s=5) as wrong_token:
            assert _fails(wrong_token) == grpc.StatusCode.UNAUTHENTICATED  # TLS does not replace the token


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path, pki):
    tls = TlsConfig(cert_file=pki["server_cert"], key_file=pki["server_key"], client_ca_file=pki["ca"], require_client_cert=True)
    with _serve(tmp_path, tls) as service:
        target = f"127.0.0.1:{service.port}"
        with ResultsClient(
            target, token=TOKEN, ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"], timeout_s=5
        ) as client:
            assert client.get_result("f-tls").frame_id == "f-tls"
        with ResultsClient(target, token=TOKEN, ca_file=pki["ca"], timeout_s=5) as anonymous:
            assert _fails(anonymous) == grpc.StatusCode.UNAVAILABLE
