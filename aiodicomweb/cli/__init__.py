"""The `aiodicomweb` command line tool; `commands` parses and runs, `display` shows progress."""

from __future__ import annotations

from aiodicomweb.cli.commands import CliError, build_parser, format_table, main

__all__ = ["CliError", "build_parser", "format_table", "main"]
