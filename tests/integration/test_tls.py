"""HTTPS: serve.yaml's `http.ssl_certfile` / `http.ssl_keyfile` reach Serve's proxy through the code
path `mtc serve` uses (`connect_ray`, `deploy`, `HttpConfig.serve_http_options`).

A self-signed certificate for 127.0.0.1 / localhost is made here. A client that trusts it gets
answers; plain HTTP on the same port gets none; a client trusting only the usual CAs is refused."""
import datetime
import ipaddress
import ssl

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.serve_cmds import connect_ray, deploy
from cluster.serve_config import parse_serve_config
from tests.e2e.conftest import _wait_ready
from tests.net import free_port

pytestmark = pytest.mark.ray


def write_self_signed_certificate(directory) -> tuple[str, str]:
    """(cert.pem, key.pem) for 127.0.0.1 and localhost, valid for a day. A CA certificate, so that
    it can be its own trust anchor; the key is unencrypted."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtc test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """(https base URL, an SSL context trusting only the served certificate)."""
    import ray
    from ray import serve

    cert, key = write_self_signed_certificate(tmp_path_factory.mktemp("tls"))
    config = parse_serve_config({
        "bundle": str(tiny_bundle), "app_name": "mtc-tls",
        "http": {"port": free_port(), "ssl_certfile": cert, "ssl_keyfile": key},
        "encoder": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "scheduler": {"num_cpus": 0.25},
        "gateway": {"num_cpus": 0.25, "autoscaling": {"policy": "ongoing_requests", "max_replicas": 1}},
    })
    trust_served_cert = ssl.create_default_context(cafile=cert)
    connect_ray(None, 4, config.http.ingress)
    try:
        url = deploy(config)
        _wait_ready(url, 90, verify=trust_served_cert)
        yield url, trust_served_cert
    finally:
        serve.shutdown()
        ray.shutdown()


def test_a_client_trusting_the_certificate_is_served(served):
    url, trust_served_cert = served
    assert url.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=url, verify=trust_served_cert, timeout=60) as client:
        assert client.get("/healthz").status_code == 200
        r = client.post("/v1/predict", json={"texts": ["Markets rose in London."], "tasks": ["topic"],
                                             "priority": "interactive", "deadline_ms": 10000})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["topic"]


def test_plain_http_on_the_same_port_gets_no_answer(served):
    url, _ = served
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://", 1) + "/healthz", timeout=10)


def test_default_verification_refuses_the_self_signed_certificate(served):
    url, _ = served
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/healthz", timeout=10)
