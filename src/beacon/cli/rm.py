"""`beacon rm`: see beacon.cli.containers."""

from beacon.cli.containers import command

run = command("rm")
