"""gRPC checks: the standard health protocol (``grpc.health.v1.Health/Check``), as Consul runs them.

``GRPC`` is ``host:port`` or ``host:port/service``; the check is passing when the server answers
SERVING for that service (the empty name means the whole server). ``GRPCUseTLS`` dials with TLS,
verifying the server unless ``TLSSkipVerify`` (then the certificate the server presents is trusted as
it is, which is what skipping verification means for a self-signed server). One channel per run, as Consul dials per check.
"""

from __future__ import annotations

import asyncio
import ssl

from beacon.checks.definition import CheckDefinition
from beacon.checks.durations import format_duration
from beacon.checks.probe import ProbeResult
from beacon.checks.status import CRITICAL, PASSING

__all__ = ["GRPCProbe", "split_grpc_target"]


def split_grpc_target(target: str) -> tuple[str, str]:
    """``host:port/service`` -> (``host:port``, ``service``)."""
    address, _, service = target.partition("/")
    return address, service


class GRPCProbe:
    def __init__(self, defn: CheckDefinition, timeout: float) -> None:
        self.target = defn.grpc
        self.address, self.service = split_grpc_target(defn.grpc)
        self.timeout = timeout
        self.use_tls = defn.grpc_use_tls
        self.skip_verify = defn.tls_skip_verify
        self.server_name = defn.tls_server_name

    async def _channel(self):  # type: ignore[no-untyped-def]
        import grpc.aio  # imported on first use: grpc costs ~100 ms at agent start-up

        if not self.use_tls:
            return grpc.aio.insecure_channel(self.address)
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        if self.skip_verify:
            # gRPC core has no "don't verify" switch: trust the certificate the server presents (this
            # covers self-signed servers, the usual reason for skipping verification).
            host, _, port = self.address.rpartition(":")
            pem = await asyncio.to_thread(ssl.get_server_certificate, (host.strip("[]"), int(port)),
                                          timeout=self.timeout)
            creds = grpc.ssl_channel_credentials(root_certificates=pem.encode())
            if not self.server_name:
                options.append(("grpc.ssl_target_name_override", _cert_name(pem) or host))
        else:
            creds = grpc.ssl_channel_credentials()
        return grpc.aio.secure_channel(self.address, creds, options=options)

    async def run(self) -> ProbeResult:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            channel = await self._channel()
        except (OSError, ValueError) as exc:
            return CRITICAL, f"gRPC {self.target}: {exc}"
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return CRITICAL, f"gRPC {self.target}: timed out after {format_duration(self.timeout)}"
            return CRITICAL, f"gRPC {self.target}: rpc error: code = {exc.code().name} desc = {exc.details()}"
        finally:
            await channel.close()
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if status != "SERVING":
            return CRITICAL, f"gRPC {self.target} serving status: {status}"
        return PASSING, f"gRPC check {self.target}: success"

    async def close(self) -> None:
        return None


def _cert_name(pem: str) -> str:
    """The first DNS name (or CN) of a PEM certificate, so a skip-verify channel's name check passes."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        if dns:
            return dns[0]
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""
