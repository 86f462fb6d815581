"""`make bench`: run every benchmark with its default settings, one after another.

Each writes its JSON (and plot, where it has one) under benchmarks/results/. Run a single one
with `python benchmarks/bench_<name>.py --help` for its options (GPU: `--device cuda`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("games", []),
    ("autoencoder", ["--train", "180"]),
    ("lam", []),
    ("dynamics", []),
    ("simulator", []),
]


def main() -> int:
    failed = []
    for name, args in BENCHES:
        script = HERE / f"bench_{name}.py"
        print(f"== {script.name} {' '.join(args)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *args], cwd=HERE.parent)
        print(f"== {script.name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
