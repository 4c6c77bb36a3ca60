"""`beacon logs`: see beacon.cli.containers."""

from beacon.cli.containers import command

run = command("logs")
