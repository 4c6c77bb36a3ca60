"""Consul-style flags on top of argparse: `-flag value`, `-flag=value` and `--flag` all work."""

from __future__ import annotations

import argparse
from typing import Any


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser whose `flag()` registers both `-name` and `--name`."""

    def __init__(self, prog: str, description: str = "", **kw: Any) -> None:
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kw)

    def flag(self, name: str, *aliases: str, **kw: Any) -> argparse.Action:
        names = [f"-{name}", f"--{name}"]
        for alias in aliases:
            names += [f"-{alias}", f"--{alias}"]
        kw.setdefault("dest", name.replace("-", "_"))
        return self.add_argument(*names, **kw)

    def error(self, message: str) -> Any:  # one clear line, exit 1 like Consul's CLI
        self.exit(1, f"Error: {message}\n")
