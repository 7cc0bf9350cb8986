"""``python -m bindguard`` (and ``torchrun ... -m bindguard``): the command line."""

from bindguard.cli.main import run

run()
