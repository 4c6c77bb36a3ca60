"""The built-in Connect CA on a real agent, used the way a connect-native application uses it: roots
and leaf certificates through py-consul, checked with `cryptography`; then two services talk mutual
TLS on loopback with those certificates, and the server side admits a caller only when
/v1/agent/connect/authorize says its intentions allow it."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time

import consul
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import launch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent():
    a = launch()
    yield a
    a.stop()


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_roots_and_leaf_certificates_chain_and_name_the_service(agent) -> None:
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    roots = c.agent.connect.ca.roots()
    assert roots == c.connect.ca.roots()
    assert len(roots["Roots"]) == 1 and roots["ActiveRootID"] == roots["Roots"][0]["ID"]
    root_info = roots["Roots"][0]
    assert root_info["Active"] is True and roots["TrustDomain"].endswith(".consul")
    root = x509.load_pem_x509_certificate(root_info["RootCert"].encode())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert root.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [f"spiffe://{roots['TrustDomain']}"]
    status, headers, pem = agent.request("GET", "/v1/connect/ca/roots?pem=true")
    assert status == 200 and pem.decode() == root_info["RootCert"]
    assert headers["Content-Type"].startswith("application/pem-certificate-chain")

    leaf = c.agent.connect.ca.leaf("web")
    assert leaf["Service"] == "web"
    assert leaf["ServiceURI"] == f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
    cert = x509.load_pem_x509_certificate(leaf["CertPEM"].encode())
    cert.verify_directly_issued_by(root)  # signed by the active root
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [leaf["ServiceURI"]]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=71) < life < dt.timedelta(hours=73)
    assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC) < cert.not_valid_after_utc
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(leaf["PrivateKeyPEM"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key() == cert.public_key()
    # The agent keeps the leaf: asked again, the same certificate and index.
    again = c.agent.connect.ca.leaf("web")
    assert (again["SerialNumber"], again["ModifyIndex"]) == (leaf["SerialNumber"], leaf["ModifyIndex"])
    # A blocking query on it waits out its wait when nothing changed (what a renewing client does).
    t0 = time.monotonic()
    status, headers, body = agent.request("GET", f"/v1/agent/connect/ca/leaf/web?index={leaf['ModifyIndex']}&wait=1s")
    assert status == 200 and json.loads(body)["SerialNumber"] == leaf["SerialNumber"]
    assert time.monotonic() - t0 >= 0.9
    # The CA configuration is the built-in provider's; it cannot be changed here.
    conf = c.connect.ca.configuration()
    assert conf["Provider"] == "consul" and conf["Config"]["LeafCertTTL"] == "72h"
    status, _, body = agent.request("PUT", "/v1/connect/ca/configuration", {"Provider": "vault", "Config": {}})
    assert status == 400 and b"cannot be reconfigured" in body


def _serve_once(server: ssl.SSLContext, sock: socket.socket, target: str, authorize, result: dict) -> None:
    """The 'db' side of a connect-native service: TLS with a client certificate from the mesh CA,
    then authorize the caller's SPIFFE ID before answering."""
    conn, _ = sock.accept()
    try:
        with server.wrap_socket(conn, server_side=True) as tls:
            uri = next(v for k, v in tls.getpeercert()["subjectAltName"] if k == "URI")
            verdict = authorize(target, uri)
            result["uri"], result["verdict"] = uri, verdict
            tls.sendall(b"hello from db\n" if verdict["Authorized"] else b"denied\n")
    except (ssl.SSLError, OSError) as exc:
        result["error"] = exc


def _call(tmp_path, roots_pem: str, leaf: dict | None, port: int) -> bytes:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # mesh identity is the URI SAN, not a host name
    client.load_verify_locations(cadata=roots_pem)
    if leaf is not None:
        client.load_cert_chain(_write(tmp_path, "c.pem", leaf["CertPEM"]), _write(tmp_path, "c-key.pem", leaf["PrivateKeyPEM"]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, client.wrap_socket(raw) as tls:
        return tls.recv(100)


def test_two_connect_native_services_talk_mutual_tls_as_intentions_allow(agent, tmp_path) -> None:
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    roots_pem = "".join(r["RootCert"] for r in c.agent.connect.ca.roots()["Roots"])
    db, web = c.agent.connect.ca.leaf("db"), c.agent.connect.ca.leaf("web")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cadata=roots_pem)
    server.load_cert_chain(_write(tmp_path, "db.pem", db["CertPEM"]), _write(tmp_path, "db-key.pem", db["PrivateKeyPEM"]))

    def authorize(target: str, uri: str) -> dict:
        return c.agent.connect.authorize(target, uri, "")

    def exchange(leaf: dict | None) -> tuple[bytes | Exception, dict]:
        result: dict = {}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            t = threading.Thread(target=_serve_once, args=(server, sock, "db", authorize, result))
            t.start()
            try:
                answer: bytes | Exception = _call(tmp_path, roots_pem, leaf, sock.getsockname()[1])
            except (ssl.SSLError, OSError) as exc:
                answer = exc
            t.join(10)
        return answer, result

    answer, result = exchange(web)
    assert answer == b"hello from db\n" and result["uri"] == web["ServiceURI"]
    assert result["verdict"] == {"Authorized": True, "Reason": "ACLs disabled, access is allowed by default"}
    # An intention denies web -> db: the same certificate, now refused after the handshake.
    assert c.connect.intentions.upsert("web", "db", action="deny") is True
    answer, result = exchange(web)
    assert answer == b"denied\n" and result["verdict"]["Authorized"] is False
    assert c.connect.intentions.delete("web", "db") is True
    # A caller without a mesh certificate does not get past the handshake.
    answer, result = exchange(None)
    assert isinstance(answer, ssl.SSLError | OSError) and "verdict" not in result
