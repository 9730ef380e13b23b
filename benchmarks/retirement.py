"""What worker retirement costs a study of quick trials, and how far a worker's memory grows (issue 24).

    python benchmarks/retirement.py [--spec iris|digits] [--trials 300]

Runs ``python -m tradeoff_search run SPEC --workers 1`` in a temporary folder (fresh stores) and
samples, twice a second from /proc, the worker processes of the run and their resident set size.
``iris`` is a study of sub-second trials (iris, 2 epochs, the default space); ``digits`` is the
default study, ``studies/digits.toml`` as it is. At the end it reads the trials' start and end
times from the study and reports:

- the time lost between trials: every gap between one trial's end and the next one's start,
  less the median gap, summed, as a share of the study's wall time (first start to last end);
  split into the gaps at a retirement (a worker process appeared or left during the gap, by the
  samples: its successor's TensorFlow import shows up there) and the others (the sampler, the
  MLflow record of a trial that changed the front, a busy machine);
- how many worker processes ran, and the gaps over 1 s;
- each worker's RSS growth: its largest sample less its sample at the end of the first trial it
  finished while it was the only worker.

Run it with ``PYTHONPATH`` at another checkout to measure that code (e.g. the code before a change).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from memory import children, rss_mb

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SECONDS = 0.5
IRIS = """
[study]
name = "iris300"
n_trials = 300
seed = 0

[data]
source = "sklearn:iris"

[training]
max_epochs = 2

[tracking]
log_models = "none"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=["iris", "digits"], default="iris")
    parser.add_argument("--trials", type=int, help="--n-trials (default: the spec's: 300 for iris, 30 for digits)")
    args = parser.parse_args()
    text = IRIS if args.spec == "iris" else (REPO / "studies" / "digits.toml").read_text()
    name = "iris300" if args.spec == "iris" else "digits"
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "spec.toml").write_text(text)
        trials = ["--n-trials", str(args.trials)] if args.trials else []
        started = time.monotonic()
        run = subprocess.Popen(
            [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", *trials, "--workers", "1", "--no-progress"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        samples: dict[int, list[tuple[float, float]]] = {}  # worker pid: (time.time(), MB)
        while run.poll() is None:
            for pid in children(run.pid):
                if (size := rss_mb(pid)) is not None:
                    samples.setdefault(pid, []).append((time.time(), size))
            time.sleep(SAMPLE_SECONDS)
        wall = time.monotonic() - started
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{root}/mlruns/optuna.db")
        done = sorted(
            (t for t in study.trials if t.datetime_complete is not None), key=lambda t: t.datetime_start.timestamp()
        )
    print(f"run exit code {run.returncode}, {wall:.0f} s, {len(done)} finished trials, "
          f"{len(samples)} worker process(es)")  # fmt: skip
    starts = [t.datetime_start.timestamp() for t in done]
    ends = [t.datetime_complete.timestamp() for t in done]
    gaps = [max(0.0, start - end) for end, start in zip(ends[:-1], starts[1:], strict=True)]
    span = ends[-1] - starts[0]
    usual = statistics.median(gaps)
    lost = sum(gap - usual for gap in gaps if gap > usual)
    durations = [end - start for start, end in zip(starts, ends, strict=True)]
    print(f"trial median {statistics.median(durations):.2f} s, median gap {usual * 1e3:.0f} ms; "
          f"gaps over 1 s: {', '.join(f'{g:.1f}' for g in gaps if g > 1) or 'none'} (s)")  # fmt: skip
    at_retirement = sum(gap - usual for gap, end in zip(gaps, ends, strict=False)
                        if gap > usual and _workers_change(end, end + gap, samples))  # fmt: skip
    print(f"time lost between trials beyond the median gap: {lost:.1f} s of {span:.0f} s, {lost / span:.1%}: "
          f"at retirements {at_retirement:.1f} s ({at_retirement / span:.1%}), "
          f"elsewhere {lost - at_retirement:.1f} s ({(lost - at_retirement) / span:.1%})")  # fmt: skip
    for pid, series in samples.items():
        alone = [end for end in ends if series[0][0] <= end <= series[-1][0] and _alone(pid, end, samples)]
        if not alone:
            print(f"  worker {pid}: finished no trial alone ({series[-1][0] - series[0][0]:.0f} s alive)")
            continue
        baseline = min(series, key=lambda sample: abs(sample[0] - alone[0]))[1]
        peak = max(size for moment, size in series if moment >= alone[0])
        print(f"  worker {pid}: {len([e for e in ends if series[0][0] <= e <= series[-1][0]])} trials in its life, "
              f"{baseline:.0f} MB after its first, peak {peak:.0f} MB: growth {peak - baseline:+.0f} MB")  # fmt: skip


def _workers_change(start: float, end: float, samples: dict[int, list[tuple[float, float]]]) -> bool:
    """Whether a worker process was first or last seen within a sampling interval of [start, end]."""
    first_and_last = [moment for series in samples.values() for moment in (series[0][0], series[-1][0])]
    return any(start - SAMPLE_SECONDS <= moment <= end + SAMPLE_SECONDS for moment in first_and_last)


def _alone(pid: int, moment: float, samples: dict[int, list[tuple[float, float]]]) -> bool:
    """Whether ``pid`` was the only worker alive at ``moment`` (by the samples)."""
    return all(other == pid or not series[0][0] <= moment <= series[-1][0] for other, series in samples.items())


if __name__ == "__main__":
    main()
