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


def first_positional(p: argparse.ArgumentParser, argv: list[str]) -> int:
    """Index of the first argument that is neither a flag nor a flag's value (len(argv) if none).

    Commands that run a child (`lock PREFIX CHILD...`, `watch ... HANDLER...`) cut the child off
    there before argparse sees it: Python 3.11's argparse would read a child's `-c` as an ambiguous
    abbreviation of a flag like `-ca-file`."""
    takes_value = {opt for a in p._actions if a.nargs != 0 for opt in a.option_strings}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            return i
        if "=" not in arg and arg in takes_value:
            i += 1  # its value
        i += 1
    return len(argv)
