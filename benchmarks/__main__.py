"""The benchmark suite in one command, each benchmark in turn (run it on a quiet machine):

    python -m benchmarks            # encode and training throughput (~25 min on 2 CPU cores)
    python -m benchmarks --all      # also the recipes end to end and cached MNRL memory (~1.5 h more)

Each benchmark prints jaxsbert beside sentence-transformers on the same machine, model, data and
batch, with the ratio; see each module's docstring for its options and benchmarks/RESULTS.md for results.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.common import REPO

QUICK = ["benchmarks.encode", "benchmarks.train"]
ALL = QUICK + ["benchmarks.recipes", "benchmarks.cached_mnrl_memory"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also recipes.py and cached_mnrl_memory.py")
    args = parser.parse_args()
    failed = []
    for module in ALL if args.all else QUICK:
        print(f"\n=== python -m {module}", flush=True)
        if subprocess.run([sys.executable, "-m", module], cwd=REPO).returncode != 0:
            failed.append(module)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
