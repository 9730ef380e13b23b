"""optuna-dashboard's page load on a 200-trial study whose trials carry our user attributes.

    pip install -e ".[dashboard,test]" && python benchmarks/dashboard_load.py [--trials 200] [--epochs 30]

Writes two SQLite studies with ``study.add_trial`` (no training): trials with the attributes a
trial of ours records (per-epoch ``history`` curves of ``--epochs`` epochs, the ``latency``
statistics, ``n_params``, ``macs``, …) and the same trials without ``history``, side by side.
Serves each with a real ``optuna-dashboard`` on 127.0.0.1 and loads it in headless Chromium
(Debian's chromium and chromium-driver): the time from navigation until the Pareto-front plot
shows every completed trial, and until the trial list says how many trials there are; the
median of ``--repeats`` loads each, and the size of the study's API answer the page polls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

DISTRIBUTIONS = {
    "family": CategoricalDistribution(["mlp"]),
    "n_layers": IntDistribution(1, 3),
    "units_0": IntDistribution(16, 512, log=True),
    "optimizer": CategoricalDistribution(["adam", "adamw", "sgd", "rmsprop", "nadam"]),
    "activation": CategoricalDistribution(["relu", "gelu", "tanh"]),
    "dropout": FloatDistribution(0.0, 0.3),
    "learning_rate": FloatDistribution(1e-4, 3e-2, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
}


def trial_attrs(rng: np.random.Generator, epochs: int, with_history: bool) -> dict[str, object]:
    """User attributes shaped like those a trial of ours records (see ``_objective.py``)."""
    p10 = float(rng.uniform(0.0006, 0.02))
    attrs: dict[str, object] = {
        "n_params": int(rng.integers(1_000, 200_000)),
        "macs": int(rng.integers(1_000, 200_000)),
        "model_bytes": int(rng.integers(5_000, 800_000)),
        "latency": {
            "p10_ms": p10,
            "median_ms": p10 * 1.02,
            "p90_ms": p10 * 1.1,
            "iqr_ms": p10 * 0.03,
            "samples": 40,
            "calls_per_block": 2706,
            "statistic": "p10",
            "ci95_relative": 0.004,
            "runtime": "litert",
            "runtime_version": "ai-edge-litert 2.3.0",
            "threads": 1,
            "batch_size": 1,
            "cpu": "AMD EPYC",
            "logical_cores": 2,
            "model_bytes": 1736,
            "reference_p10_ms": 0.00168,
            "reference_median_ms": 0.0017,
            "normalized_ms": p10,
        },
        "trained": True,
        "train_seconds": float(rng.uniform(0.5, 3)),
        "epochs": epochs,
    }
    if with_history:
        curves = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
        attrs["history"] = {name: rng.uniform(0, 1, epochs).tolist() for name in curves}
    return attrs


def write_study(path: Path, trials: int, epochs: int, with_history: bool) -> None:
    rng = np.random.default_rng(0)
    study = optuna.create_study(
        study_name="dashboard", storage=f"sqlite:///{path}", directions=["maximize", "minimize"]
    )
    study.set_metric_names(["accuracy", "latency_ms"])
    for _ in range(trials):
        params = {name: _sample(rng, d) for name, d in DISTRIBUTIONS.items()}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=DISTRIBUTIONS,
                values=[float(rng.uniform(0.8, 0.99)), float(rng.uniform(0.0006, 0.02))],
                user_attrs=trial_attrs(rng, epochs, with_history),
            )
        )


def _sample(rng: np.random.Generator, distribution: optuna.distributions.BaseDistribution) -> object:
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[int(rng.integers(len(distribution.choices)))]
    if isinstance(distribution, IntDistribution):
        return int(rng.integers(distribution.low, distribution.high + 1))
    return float(rng.uniform(distribution.low, distribution.high))


# The `optuna-dashboard` command of this Python (a bare name could be another environment's).
DASHBOARD = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def dashboard(storage: str) -> Iterator[str]:
    """A real optuna-dashboard on 127.0.0.1; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [*DASHBOARD, storage, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"optuna-dashboard did not start on {base}") from None
                time.sleep(0.3)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def chromium() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def plotted_points(driver: object) -> int:
    """Markers drawn in the first Plotly plot (the study page's first plot is the Pareto front)."""
    return driver.execute_script(  # type: ignore[attr-defined]
        "const plot = document.querySelector('.js-plotly-plot');"
        "return plot ? plot.querySelectorAll('.scatterlayer path.point').length : 0;"
    )


def load_seconds(driver: object, url: str, done: object, timeout: float = 120) -> float:
    driver.get("about:blank")  # type: ignore[attr-defined]
    start = time.perf_counter()
    driver.get(url)  # type: ignore[attr-defined]
    while not done(driver):  # type: ignore[operator]
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{url} did not finish loading in {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each trial's history curves")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    driver = chromium()
    try:
        with tempfile.TemporaryDirectory() as folder:
            for with_history in (True, False):
                path = Path(folder) / f"history_{with_history}.db"
                write_study(path, args.trials, args.epochs, with_history)
                with dashboard(f"sqlite:///{path}") as base:
                    with urllib.request.urlopen(f"{base}/api/studies/1?after=0", timeout=60) as answer:
                        size = len(answer.read())
                    study_page = [
                        load_seconds(driver, f"{base}/dashboard/studies/1", lambda d: plotted_points(d) >= args.trials)
                        for _ in range(args.repeats)
                    ]
                    trials_page = [
                        load_seconds(
                            driver,
                            f"{base}/dashboard/studies/1/trials",
                            lambda d: f"{args.trials} Trials" in d.find_element("tag name", "body").text,
                        )
                        for _ in range(args.repeats)
                    ]
                label = f"with {args.epochs}-epoch history" if with_history else "without history"
                print(json.dumps({
                    "trials": args.trials, "attributes": label, "api_kb": round(size / 1024),
                    "study_page_s": round(statistics.median(study_page), 2),
                    "trials_page_s": round(statistics.median(trials_page), 2),
                    "study_page_all_s": [round(s, 2) for s in study_page],
                }))  # fmt: skip
    finally:
        driver.quit()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
