"""Subcommands of the ``gritkit`` command line, one module each (see gritkit/cli.py)."""
