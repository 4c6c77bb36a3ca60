"""The registrator: every published port of a running container becomes a service.

It reads the Docker Engine API over a unix socket (the embedded engine or a real dockerd, with the
same code) and writes to a Consul-compatible agent API (the Beacon agent it runs in, or any Consul
agent). See docs/registrator.md.

Public names::

    Registrator(RegistratorConfig(docker_host=..., registry="consul://127.0.0.1:8500", ...))
        await start()   # ping both ends (with retries), attach to events, first full sync
        await stop()    # registrations stay; the next start reconciles them
    container_services(inspect, MappingOptions(...)) -> (services, problems)   # pure mapping

Exceptions::

    RegistratorError      fatal: bad options, Docker or the registry unreachable after the retries
    DockerError           a Docker Engine API call failed (status 0: unreachable)
    RegistryError         a registry call failed (status 0: unreachable; 4xx: rejected)
"""

from beacon.registrator._clients import ConsulClient, DockerClient, DockerError, RegistryError
from beacon.registrator._mapping import MappingOptions, ServiceSpec, container_services, split_tags
from beacon.registrator._registrator import Registrator, RegistratorConfig, RegistratorError

__all__ = [
    "ConsulClient",
    "DockerClient",
    "DockerError",
    "MappingOptions",
    "Registrator",
    "RegistratorConfig",
    "RegistratorError",
    "RegistryError",
    "ServiceSpec",
    "container_services",
    "split_tags",
]
