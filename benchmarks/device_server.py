"""Timing on a latency server: consistent, does it free the workers, what does it cost? (issue 22)

    python benchmarks/device_server.py [--trials 48] [--epochs 5] [--out benchmarks/results/device_server.json]

1. Consistency: a latency server pinned to core 0 (``taskset -c 0 python -m tradeoff_search device
   serve``) times 12 MLPs from ~5k to ~10M multiply-adds (those of ``latency_harness.py``), sent by
   two client processes at once (their requests queue); Spearman rank correlation and median
   |relative difference| of ``latency_ms`` between the two clients (p10 / interleaved reference ×
   one calibration, the reference timed alone on the server, as a study does), idle and while two
   worker processes train on the same machine (so here the "device" shares the cores; on a real
   device it would not).
2. Throughput: the same short digits study with 1 and 2 local workers (``run --workers N``),
   timed locally under the machine lock and on a latency server on this machine: trials per minute,
   of the whole command and steady (trials 2..n over the span of their finishes in the storage, so
   start-up, which no worker count shortens, is left out). And how far training alone scales on
   these cores: the same Keras training in one process alone vs two at once (epochs per minute,
   nothing timed).
3. Overhead: wall time of one measurement through the server vs the same measurement local
   (transfer, queue and the hand-over to the timing process), alternated, as a share of a trial.

Targets: Spearman >= 0.95, median |rel. diff| <= 5% idle, <= 10% while two workers train; >= 1.8x
trials per minute with 2 workers on the server.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _digits import short_digits_spec
from latency_harness import TARGET_MACS, compare, width_for

TRAINER = (
    "import numpy as np, keras\n"
    "x = np.random.rand(4096, 64).astype('float32'); y = np.random.randint(0, 10, 4096)\n"
    "m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation='relu'),"
    " keras.layers.Dense(10, activation='softmax')])\n"
    "m.compile('adam', 'sparse_categorical_crossentropy')\n"
    "while True: m.fit(x, y, epochs=1, batch_size=64, verbose=0)\n"
)
# The same training, counting its epochs for a while after a warm-up (argv: seconds, output file).
COUNTING_TRAINER = TRAINER.replace(
    "while True: m.fit(x, y, epochs=1, batch_size=64, verbose=0)\n",
    "import sys, time\nm.fit(x, y, epochs=2, batch_size=64, verbose=0)\n"
    "end, epochs = time.perf_counter() + float(sys.argv[1]), 0\n"
    "while time.perf_counter() < end: m.fit(x, y, epochs=1, batch_size=64, verbose=0); epochs += 1\n"
    "open(sys.argv[2], 'w').write(str(epochs))\n",
)


def start_server(tmp: Path, pin: bool) -> tuple[subprocess.Popen[bytes], str]:
    log = tmp / f"server-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "tradeoff_search", "device", "serve", "--port", "0"]
    with log.open("wb") as out:
        server = subprocess.Popen(["taskset", "-c", "0", *command] if pin else command, stdout=out,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
    while not (match := re.search(r"http://127\.0\.0\.1:\d+", log.read_text())):
        assert server.poll() is None, "the server did not start"
        time.sleep(0.1)
    return server, match.group(0)


def write_models(tmp: Path) -> list[Path]:
    """The 12 MLPs of latency_harness.py as .tflite files (one TensorFlow process, once)."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom tradeoff_search.cost._latency import to_tflite\n"
        "from tradeoff_search.space._families import build_model\nfrom tradeoff_search.space._space import Candidate\n"
        "for i, w in enumerate(map(int, sys.argv[2:])):\n"
        "    c = Candidate(units=(w, w), activation='relu', dropout=0.0, batch_norm=False)\n"
        "    Path(sys.argv[1], f'm{i:02d}.tflite').write_bytes(to_tflite(build_model(c, (64,), 10), signature=False))\n"
    )
    widths = [str(width_for(macs)) for macs in TARGET_MACS]
    subprocess.run([sys.executable, "-c", code, str(tmp), *widths], check=True, stderr=subprocess.DEVNULL)
    return sorted(tmp.glob("m*.tflite"))


def client(out: Path, url: str, models: list[Path]) -> None:
    """One client process: time every model on the server, as trials do (numpy + urllib only)."""
    from tradeoff_search import measure_latency

    stats = [measure_latency(path.read_bytes(), device=url).to_dict() for path in models]
    out.write_text(json.dumps(stats))


def consistency(tmp: Path, url: str, models: list[Path], calibration_ms: float, label: str) -> dict:
    outs = [tmp / f"{label}_{i}.json" for i in "ab"]
    clients = [subprocess.Popen([sys.executable, __file__, "--client", str(out), url, *map(str, models)])
               for out in outs]  # fmt: skip
    for process in clients:
        assert process.wait() == 0
    a, b = (json.loads(out.read_text()) for out in outs)
    normalized = [np.array([s["p10_ms"] / s["reference_p10_ms"] * calibration_ms for s in run]) for run in (a, b)]
    result = {"a_ms": normalized[0].tolist(), "b_ms": normalized[1].tolist(), **compare(*normalized)}
    print(f"{label:8s}: spearman {result['spearman']:.3f}, median |rel diff| {result['median_abs_rel_diff']:.1%}, "
          f"max {result['max_abs_rel_diff']:.1%}")  # fmt: skip
    return result


def throughput(tmp: Path, url: str | None, workers: int, trials: int, epochs: int) -> dict:
    text = short_digits_spec(epochs)
    if url is not None:
        text = text.replace("[latency]\n", f'[latency]\ndevice = "{url}"\n')
        assert f'device = "{url}"' in text
    root = Path(tempfile.mkdtemp(dir=tmp))
    (root / "digits.toml").write_text(text)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tradeoff_search", "run", "digits.toml", "--n-trials", str(trials),
                    "--workers", str(workers), "--no-progress"], cwd=root, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    seconds = time.perf_counter() - start
    rate = trials / seconds * 60
    steady = steady_rate(f"sqlite:///{root}/mlruns/optuna.db")
    where = "server" if url else "local lock"
    print(f"{where:10s} {workers} worker(s): {trials} trials in {seconds:.0f} s: {rate:.1f} trials/min, "
          f"steady {steady:.1f}")  # fmt: skip
    return {"seconds": seconds, "trials_per_minute": rate, "steady_trials_per_minute": steady}


def steady_rate(storage: str) -> float:
    """Trials per minute between the first and the last trial to finish (start-up left out)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    finishes = sorted(t.datetime_complete.timestamp() for t in complete)
    return (len(finishes) - 1) / (finishes[-1] - finishes[0]) * 60


def training_scaling(tmp: Path, seconds: float = 40) -> dict:
    """Epochs per minute of the Keras training alone in one process, and of two processes at once."""
    rates = {}
    for processes in (1, 2):
        outs = [tmp / f"epochs-{processes}-{i}" for i in range(processes)]
        trainers = [subprocess.Popen([sys.executable, "-c", COUNTING_TRAINER, str(seconds), str(out)],
                                     stderr=subprocess.DEVNULL) for out in outs]  # fmt: skip
        for trainer in trainers:
            assert trainer.wait() == 0
        rates[processes] = sum(int(out.read_text()) for out in outs) / seconds * 60
    ratio = rates[2] / rates[1]
    print(f"training alone: 1 process {rates[1]:.0f} epochs/min, 2 at once {rates[2]:.0f}: {ratio:.2f}x")
    return {"one_epochs_per_minute": rates[1], "two_epochs_per_minute": rates[2], "ratio": ratio}


def overhead(url: str, model: Path, rounds: int = 10) -> dict:
    from tradeoff_search import measure_latency

    flatbuffer = model.read_bytes()
    local, remote = [], []
    for _ in range(rounds):
        for where, times in (("local", local), (url, remote)):
            start = time.perf_counter()
            measure_latency(flatbuffer, device=where)
            times.append(time.perf_counter() - start)
    return {"local_s": float(np.median(local)), "server_s": float(np.median(remote)),
            "overhead_s": float(np.median(remote) - np.median(local))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48)  # 12 trials: start-up dominates
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/device_server.json"))
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which of the three (default: all)")
    parser.add_argument("--client", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        out, url, *models = args.client
        client(Path(out), url, [Path(m) for m in models])
        return
    from tradeoff_search.cost._device_client import DeviceBackend
    from tradeoff_search.cost._harness import Setting
    from tradeoff_search.cost._reference import reference_flatbuffer

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"macs": [64 * w + w * w + 10 * w for w in map(width_for, TARGET_MACS)]}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        models = write_models(tmp)
        if 1 in args.parts:
            server, url = start_server(tmp, pin=True)
            try:
                setting = Setting(max_seconds=2.0, reference=False)
                calibration_ms = DeviceBackend(url).measure([reference_flatbuffer()], setting)[0].p10_ms
                report["idle"] = consistency(tmp, url, models, calibration_ms, "idle")
                trainers = [
                    subprocess.Popen([sys.executable, "-c", TRAINER], stderr=subprocess.DEVNULL) for _ in range(2)
                ]
                try:
                    time.sleep(8)  # steady training
                    report["training"] = consistency(tmp, url, models, calibration_ms, "training")
                finally:
                    for trainer in trainers:
                        trainer.kill()
                        trainer.wait()
            finally:
                server.terminate()
                server.wait()
        server, url = start_server(tmp, pin=False)
        try:
            if 2 in args.parts:
                report["throughput"] = {}
                for where in ("local", "server"):
                    for workers in (1, 2):
                        device = None if where == "local" else url
                        report["throughput"][f"{where}_{workers}"] = throughput(
                            tmp, device, workers, args.trials, args.epochs
                        )
                report["training_scaling"] = training_scaling(tmp)
            if 3 in args.parts:
                report["overhead"] = overhead(url, models[6])  # ~320k multiply-adds
        finally:
            server.terminate()
            server.wait()
    if "throughput" in report:
        for where in ("local", "server"):
            one, two = (report["throughput"][f"{where}_{n}"] for n in (1, 2))
            print(f"{where}: 2 workers / 1 worker: {two['trials_per_minute'] / one['trials_per_minute']:.2f}x, "
                  f"steady {two['steady_trials_per_minute'] / one['steady_trials_per_minute']:.2f}x")  # fmt: skip
        print(f"training alone, 2 processes / 1: {report['training_scaling']['ratio']:.2f}x")
    if "overhead" in report:
        cost = report["overhead"]
        server_ms, local_ms, extra_ms = (cost[k] * 1e3 for k in ("server_s", "local_s", "overhead_s"))
        print(
            f"overhead per measurement: {server_ms:.0f} ms on the server vs {local_ms:.0f} ms local: +{extra_ms:.0f} ms"
        )
        if "throughput" in report:
            trial_s = report["throughput"]["local_1"]["seconds"] / args.trials
            print(f"  = {cost['overhead_s'] / trial_s:.1%} of a {trial_s:.1f} s trial (1 local worker)")
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
