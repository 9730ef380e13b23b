"""Install size and time of each TensorFlow package this project's extras can bring, on fresh venvs.

    python benchmarks/install_size.py [--packages "tensorflow-cpu==2.21.*" ...]

For each package, one after the other: a new venv (pip upgraded first, not timed), then
``pip install --no-cache-dir PACKAGE`` timed, and the venv's size on disk. Downloads from the
package index every time: the times are mostly the network's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import venv
from pathlib import Path

DEFAULT = ["tensorflow-cpu==2.21.*", "tensorflow==2.21.*", "tensorflow[and-cuda]==2.21.*"]


def size_mb(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) // 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=DEFAULT)
    args = parser.parse_args()
    for package in args.packages:
        with tempfile.TemporaryDirectory() as folder:
            env = Path(folder) / "venv"
            venv.create(env, with_pip=True)
            pip = [str(env / "bin" / "python"), "-m", "pip"]
            subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True, capture_output=True)
            start = time.perf_counter()
            subprocess.run([*pip, "install", "-q", "--no-cache-dir", package], check=True, capture_output=True)
            seconds = time.perf_counter() - start
            listed = subprocess.run([*pip, "list", "--format", "json"], check=True, capture_output=True, text=True)
            print(json.dumps({"package": package, "seconds": round(seconds), "venv_mb": size_mb(env),
                              "packages": len(json.loads(listed.stdout))}))  # fmt: skip


if __name__ == "__main__":
    main()
