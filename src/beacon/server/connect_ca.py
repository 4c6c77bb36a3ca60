"""The built-in Connect CA, as Consul's ``consul`` provider runs it: one root per datacenter, kept in
the replicated state, which signs the leaf certificates services present to each other.

The table ``store.extra["connect_ca"]`` holds one row, ``"ca"``: the roots in Consul's ``CARoot``
shape (``ID``, ``Name``, ``SerialNumber``, ``SigningKeyID``, ``NotBefore``, ``NotAfter``,
``RootCert``, ``Active``, ...), the trust domain, and the active root's private key (as Consul's
state store keeps the built-in provider's key; only a snapshot, which needs a management token,
carries it out). Command ``(MessageType.CONNECT_CA, {"op": "init", ...})`` installs the first root
and is refused (``False``) once one is active, so whichever server proposes first wins and every
replica holds the same root. A proposer makes the root (:func:`new_root`); nothing rotates it.

A leaf (:func:`sign_leaf`) is an ECDSA P-256 key and a certificate for
``spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>``, valid for ``LeafCertTTL`` (72 h),
returned in Consul's ``IssuedCert`` shape. The trust domain is ``<uuid>.consul`` derived from the
datacenter name, the one discovery chains already name in their SNI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from beacon.server import commands as cmd
from beacon.server.discovery_chain import trust_domain
from beacon.server.fsm import StateStore

TABLE = "connect_ca"
ROW = "ca"
WATCH_KEY = "connect_ca"
LEAF_TTL = dt.timedelta(hours=72)
ROOT_TTL = dt.timedelta(days=3650)
CONFIG = {"LeafCertTTL": "72h", "IntermediateCertTTL": "8760h", "RootCertTTL": "87600h",
          "PrivateKeyType": "ec", "PrivateKeyBits": 256}


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def new_root(datacenter: str, now: dt.datetime | None = None) -> tuple[dict[str, Any], str]:
    """A self-signed root for ``datacenter``'s trust domain: (CARoot without indexes, key PEM)."""
    now = now or dt.datetime.now(dt.UTC)
    domain = trust_domain(datacenter)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number() >> 96  # Consul's root serials fit a uint64
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pri-{serial:x}.beacon.ca.{domain[:8]}.consul")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + ROOT_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{domain}")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    root = {"ID": _colon_hex(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()),  # noqa: S324
            "Name": "Beacon CA Primary Cert", "SerialNumber": serial, "SigningKeyID": _colon_hex(ski.digest),
            "ExternalTrustDomain": domain.removesuffix(".consul"), "NotBefore": _when(cert.not_valid_before_utc),
            "NotAfter": _when(cert.not_valid_after_utc), "RootCert": pem, "IntermediateCerts": None,
            "Active": True, "PrivateKeyType": "ec", "PrivateKeyBits": 256}
    return root, _key_pem(key)


def state(store: StateStore) -> dict[str, Any] | None:
    return store.extra.get(TABLE, {}).get(ROW)


def active_root(store: StateStore) -> dict[str, Any] | None:
    row = state(store)
    return next((r for r in row["roots"] if r["Active"]), None) if row else None


def roots_view(store: StateStore) -> tuple[int, dict[str, Any]]:
    """(index, Consul's IndexedCARoots body) — no private key in it."""
    row = state(store)
    index = store.tables.get(TABLE, 0)
    if row is None:
        return index, {"ActiveRootID": "", "TrustDomain": "", "Roots": []}
    active = next((r["ID"] for r in row["roots"] if r["Active"]), "")
    return index, {"ActiveRootID": active, "TrustDomain": row["trust_domain"], "Roots": [dict(r) for r in row["roots"]]}


def configuration(store: StateStore) -> dict[str, Any]:
    row = state(store)
    index = row["roots"][0]["CreateIndex"] if row else 0
    return {"Provider": "consul", "Config": dict(CONFIG), "State": None, "ForceWithoutCrossSigning": False,
            "CreateIndex": index, "ModifyIndex": index}


def service_uri(domain: str, datacenter: str, service: str) -> str:
    return f"spiffe://{domain}/ns/default/dc/{datacenter}/svc/{service}"


def sign_leaf(store: StateStore, datacenter: str, service: str, index: int,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """A new key and certificate for ``service`` signed by the active root (Consul's IssuedCert)."""
    with store.lock:
        row = state(store)
        root = active_root(store)
        if row is None or root is None:
            raise LookupError("the Connect CA has no active root")
        root_pem, key_pem, domain = root["RootCert"], row["keys"][root["ID"]], row["trust_domain"]
    now = now or dt.datetime.now(dt.UTC)
    ca = x509.load_pem_x509_certificate(root_pem.encode())
    ca_key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    uri = service_uri(domain, datacenter, service)
    serial = x509.random_serial_number()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + LEAF_TTL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_agreement=True,
                                         content_commitment=False, data_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return {"SerialNumber": _colon_hex(serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")),
            "CertPEM": cert.public_bytes(serialization.Encoding.PEM).decode(), "PrivateKeyPEM": _key_pem(key),
            "Service": service, "ServiceURI": uri, "ValidAfter": _when(cert.not_valid_before_utc),
            "ValidBefore": _when(cert.not_valid_after_utc), "CreateIndex": index, "ModifyIndex": index,
            "RootID": root["ID"]}


# ---------------------------------------------------------------------- commands
class CACommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {cmd.CAInit: lambda idx, c: self.init(idx, dict(c.root), c.key, c.trust_domain)}

    def init(self, idx: int, root: dict[str, Any], key: str, domain: str) -> bool:
        table = self.store.extra.setdefault(TABLE, {})
        if table.get(ROW) is not None:
            return False  # another server's root won
        x509.load_pem_x509_certificate(root["RootCert"].encode())  # a malformed entry fails on every replica
        root.update(Active=True, CreateIndex=idx, ModifyIndex=idx)
        table[ROW] = {"roots": [root], "keys": {root["ID"]: key}, "trust_domain": domain}
        self.store.bump_table(TABLE, idx)
        self.store.touch(WATCH_KEY)
        return True


def install(store: StateStore) -> None:
    store.register_handlers(CACommands(store).handlers())
