"""What searching three quantization modes costs a study: whole commands, side by side (issue 34).

    XDG_RUNTIME_DIR=$(mktemp -d) nice python benchmarks/quantization_cost.py [--pairs 3]
        [--n-trials 12] [--epochs 10] [--modes none dynamic int8] [--data wine] [--batch 1] [--json FILE]

The same study (sklearn ``--data``, MLPs, ``n_trials`` trainings of ``--epochs`` epochs, timed at
``--batch`` rows a call, TPE, seed 0)
runs as ``python -m tradeoff_search run`` twice per pair, each in a fresh folder with its own
stores: float-only (``quantization = "none"``) and searched (``quantization = --modes``). The two
alternate which goes first, pair after pair, so that a machine getting busier or quieter weighs on
both alike. Reported: each command's wall and CPU time (its own and its children's), the searched
over float ratio per pair and their median, and how the searched studies' variants ended (added
COMPLETE, or PRUNED with why) and the modes TPE proposed, in its random start-up (the first 10
trainings) and after. Target: wall-time ratio ≤ 1.20.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
[study]
name = "{data}-{variant}"
n_trials = {n_trials}
sampler = "tpe"
seed = 0

[data]
source = "sklearn:{data}"

[latency]
quantization = {quantization}
batch_size = {batch}

[model]
n_layers = [1, 3]
units = [8, 256]

[training]
batch_size = [16, 32]
max_epochs = {epochs}
patience = {epochs}
"""


STARTUP = 10  # trainings TPE proposes at random first


def run_one(variant: str, args: argparse.Namespace, scratch: Path) -> dict:
    """One whole ``run`` command in a fresh folder: its wall and CPU seconds, and its trials."""
    folder = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=scratch))
    quantization = json.dumps(args.modes if variant == "searched" else "none")
    spec = folder / "spec.toml"
    spec.write_text(SPEC.format(variant=variant, n_trials=args.n_trials, quantization=quantization,
                                epochs=args.epochs, data=args.data, batch=args.batch))  # fmt: skip
    stores = ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    command = [sys.executable, "-m", "tradeoff_search", "run", str(spec), "--no-progress", *stores]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(command, cwd=folder, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"variant": variant, "wall_s": wall, "cpu_s": cpu, **_trials(folder / "optuna.db", f"{args.data}-{variant}")}


def _trials(database: Path, name: str) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{database}")
    trained = [t for t in study.trials if "variant_of" not in t.user_attrs]
    variants = [t for t in study.trials if "variant_of" in t.user_attrs]
    ended = {state: sum(t.state.name == state for t in variants) for state in ("COMPLETE", "PRUNED", "FAIL")}
    modes = [t.params.get("quantization", "none") for t in trained]
    return {"trainings": len(trained), "trials": len(study.trials), "variants": ended,
            "modes_trained": _counts(modes[:STARTUP]),
            "modes_trained_after_startup": _counts(modes[STARTUP:])}  # fmt: skip


def _counts(values: list[str]) -> dict[str, int]:
    return {value: values.count(value) for value in sorted(set(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["none", "dynamic", "int8"])
    parser.add_argument("--data", default="wine", help="a scikit-learn dataset: wine, digits, ...")
    parser.add_argument("--batch", type=int, default=1, help="rows per timed call ([latency] batch_size)")
    parser.add_argument("--json", help="write every command's figures here")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()}", flush=True)
    pairs = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            order = ("float", "searched") if pair % 2 == 0 else ("searched", "float")
            runs = {v: run_one(v, args, Path(scratch)) for v in order}
            wall = runs["searched"]["wall_s"] / runs["float"]["wall_s"]
            cpu = runs["searched"]["cpu_s"] / runs["float"]["cpu_s"]
            pairs.append({"order": order, "runs": runs, "wall_ratio": wall, "cpu_ratio": cpu})
            searched = runs["searched"]
            print(f"pair {pair} ({' then '.join(order)}): float {runs['float']['wall_s']:.1f} s wall, "
                  f"{runs['float']['cpu_s']:.1f} s CPU; searched {searched['wall_s']:.1f} s, {searched['cpu_s']:.1f} s "
                  f"-> {wall:.2f}x wall, {cpu:.2f}x CPU; variants {searched['variants']}, trained modes "
                  f"{searched['modes_trained']}, then {searched['modes_trained_after_startup']}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    summary = {"wall_ratio_median": statistics.median(p["wall_ratio"] for p in pairs),
               "wall_ratio_max": max(p["wall_ratio"] for p in pairs),
               "cpu_ratio_median": statistics.median(p["cpu_ratio"] for p in pairs)}  # fmt: skip
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": pairs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
