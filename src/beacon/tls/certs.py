"""A CA and agent certificates as ``consul tls ca create`` / ``consul tls cert create`` make them.

Files (in the current directory, as Consul writes them): ``<domain>-agent-ca.pem`` and
``<domain>-agent-ca-key.pem``; ``<dc>-server-<domain>-<n>.pem`` / ``-key.pem`` (``-client-``, ``-cli-``
likewise), with ``n`` the first number not yet used. Keys are ECDSA P-256, as Consul's. A server
certificate is valid for ``server.<dc>.<domain>``, ``localhost`` and 127.0.0.1 plus any additional names
and addresses; a client certificate for ``client.<dc>.<domain>`` and localhost.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class CertError(Exception):
    pass


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _write_new(path: str, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite an existing CA or key (Consul refuses too).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertError(f"{path} already exists") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _serial() -> int:
    return x509.random_serial_number()


def create_ca(directory: str = ".", domain: str = "consul", days: int = 1825,
              common_name: str = "") -> tuple[str, str]:
    ca_path = os.path.join(directory, f"{domain}-agent-ca.pem")
    key_path = os.path.join(directory, f"{domain}-agent-ca-key.pem")
    for path in (ca_path, key_path):
        if os.path.exists(path):
            raise CertError(f"{path} already exists")
    key = ec.generate_private_key(ec.SECP256R1())
    serial = _serial()
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Beacon"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"Beacon Agent CA {serial}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    signed = cert.sign(key, hashes.SHA256())
    _write_new(key_path, _key_pem(key), 0o600)
    _write_new(ca_path, signed.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_path, key_path


@dataclass
class CertRequest:
    kind: str                     # "server" | "client" | "cli"
    datacenter: str = "dc1"
    domain: str = "consul"
    days: int = 365
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    node: str = ""


def create_cert(req: CertRequest, ca_file: str, ca_key_file: str, directory: str = ".") -> tuple[str, str]:
    if req.kind not in ("server", "client", "cli"):
        raise CertError("Please provide either -server, -client, or -cli")
    try:
        with open(ca_file, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        with open(ca_key_file, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read the CA: {exc}") from None
    prefix = f"{req.datacenter}-{req.kind}-{req.domain}"
    n = 0
    while os.path.exists(os.path.join(directory, f"{prefix}-{n}.pem")):
        n += 1
    cert_path = os.path.join(directory, f"{prefix}-{n}.pem")
    key_path = os.path.join(directory, f"{prefix}-{n}-key.pem")
    role_name = f"{req.kind}.{req.datacenter}.{req.domain}"
    dns = [role_name, "localhost"] if req.kind != "cli" else [f"cli.{req.datacenter}.{req.domain}", "localhost"]
    if req.kind == "server" and req.node:
        dns.insert(0, f"{req.node}.server.{req.datacenter}.{req.domain}")
    dns += [d for d in req.dns_names if d not in dns]
    ips = ["127.0.0.1"] if req.kind == "server" else []
    ips += [i for i in req.ip_addresses if i not in ips]
    try:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    except ValueError as exc:
        raise CertError(f"invalid -additional-ipaddress: {exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if req.kind != "cli" \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role_name)]))
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(_serial())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=req.days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False))
    signed = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    _write_new(key_path, _key_pem(key), 0o600)
    _write_new(cert_path, signed.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path
