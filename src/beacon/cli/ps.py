"""`beacon ps`: see beacon.cli.containers."""

from beacon.cli.containers import command

run = command("ps")
