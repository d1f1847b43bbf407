"""Run every benchmark in this folder, one after the other (`nox -s bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    # Names of benchmarks pick which run; everything else (options and their
    # values, e.g. `--out /dev/shm`) goes to each, which ignores what it lacks.
    wanted = [a for a in argv if any(a in s.stem for s in scripts) and not a.startswith("-")]
    flags = [a for a in argv if a not in wanted]
    failed = 0
    for script in scripts:
        if wanted and not any(w in script.stem for w in wanted):
            continue
        print(f"\n=== {script.name} ===", flush=True)
        failed |= subprocess.call([sys.executable, str(script), *flags], cwd=HERE.parent)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
