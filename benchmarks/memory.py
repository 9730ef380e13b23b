"""Does a worker's memory stay flat over a long study? (issue 4: RSS growth ≤ 150 MB over 100 trials)

    python benchmarks/memory.py [--trials 100] [--epochs 3] [--in-process] [--spec studies/mnist1d.toml]

Runs ``python -m tradeoff_search run --workers 1`` on digits with a short epoch budget (fresh
stores in a temporary folder) and samples, twice a second from /proc, the resident set size of
every process of the run. A worker process is replaced once its memory has grown by
``[study] worker_growth_mb`` (until issue 24: after 15 trials), so that whatever TensorFlow keeps
per trial is released (~4 MB a trial before training stopped leaking its graphs; +57 to +70 MB
over 100 trials since); the coordinator never trains.
``--in-process`` runs every trial in the one process instead (``run --in-process``), to see what a
long-lived process keeps. ``--spec`` runs another spec instead, as it is (``--epochs`` then unused).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _digits import short_digits_spec


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
            return [int(p) for p in listing.read().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="run the trials in the one process")
    parser.add_argument("--spec", type=Path, help="a spec to run as it is, instead of the shortened digits one")
    args = parser.parse_args()
    text = args.spec.read_text() if args.spec else short_digits_spec(args.epochs)
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "spec.toml").write_text(text)
        run = subprocess.Popen(
            [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--n-trials", str(args.trials),
             *(["--in-process"] if args.in_process else ["--workers", "1"]), "--no-progress"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        workers: dict[int, list[float]] = {}
        coordinator: list[float] = []
        while run.poll() is None:
            if (own := rss_mb(run.pid)) is not None:
                coordinator.append(own)
            for pid in children(run.pid):
                if (size := rss_mb(pid)) is not None:
                    workers.setdefault(pid, []).append(size)
            time.sleep(0.5)
    coordinator_settled = coordinator[min(len(coordinator) - 1, 20)]
    if args.in_process:
        print(f"{args.trials} trials in one process: {coordinator_settled:.0f} MB after 10 s, "
              f"peak {max(coordinator):.0f} MB (growth {max(coordinator) - coordinator_settled:+.0f} MB)")  # fmt: skip
        return
    print(f"{args.trials} trials, {len(workers)} worker process(es) in turn")
    for pid, sizes in workers.items():
        settled = sizes[min(len(sizes) - 1, 20)]  # ten seconds in: TensorFlow loaded, first trials done
        growth = max(sizes) - settled
        print(f"  worker {pid}: {settled:.0f} MB after 10 s, peak {max(sizes):.0f} MB (growth {growth:+.0f} MB)")
    peak = max(max(s) for s in workers.values())
    first = workers[next(iter(workers))]
    print(f"largest worker RSS {peak:.0f} MB; over the whole study: {peak - first[min(len(first) - 1, 20)]:+.0f} MB "
          f"from the first worker's settled size")  # fmt: skip
    print(f"coordinator: {coordinator_settled:.0f} MB settled, peak {max(coordinator):.0f} MB")


if __name__ == "__main__":
    main()
