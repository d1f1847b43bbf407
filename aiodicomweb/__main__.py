"""`python -m aiodicomweb`: the `aiodicomweb` command."""

from __future__ import annotations

from aiodicomweb.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
