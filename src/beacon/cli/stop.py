"""`beacon stop`: see beacon.cli.containers."""

from beacon.cli.containers import command

run = command("stop")
