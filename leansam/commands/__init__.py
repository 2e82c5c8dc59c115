"""Implementations of the CLI subcommands (each ``run(args) -> exit status``)."""
