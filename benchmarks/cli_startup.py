"""How long `python -m tradeoff_search --help` takes, and that it imports no TensorFlow or MLflow.

python benchmarks/cli_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CHECK = (
    "import sys, runpy\nsys.argv = ['tradeoff_search', '--help']\n"
    "try:\n    runpy.run_module('tradeoff_search', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'mlflow'}), file=sys.stderr)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tradeoff_search", "--help"], check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    heavy = subprocess.run([sys.executable, "-c", CHECK], check=True, capture_output=True, text=True).stderr.strip()
    print(f"--help: median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s over {args.repeats} runs")
    print(f"heavy modules imported by --help: {heavy}")


if __name__ == "__main__":
    main()
