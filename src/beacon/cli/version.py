from __future__ import annotations

from beacon import CONSUL_COMPAT_VERSION, __version__


def run(argv: list[str]) -> int:
    print(f"Beacon v{__version__}\nConsul API compatibility: v{CONSUL_COMPAT_VERSION}")
    return 0
