"""RAM and flash budgets for a microcontroller (issue 32): what searching with them finds, what
measuring RAM buys over an estimate, and what it costs.

    nice python benchmarks/micro_budgets.py [--minutes 3] [--seeds 0 1 2] [--json FILE] [--wide]

Per seed, two arms of studies/mnist1d_micro.toml, each for the same wall time, one after the
other (which goes first alternates), each in a fresh process:

- ``budgets``: the spec as it is, ``[budget] ram_kb = 16, flash_kb = 64``: a candidate over
  either is measured before training and never trained;
- ``latency``: the same spec without those budgets (accuracy and latency only), filtered
  afterwards to the same budgets.

Both train for at most 8 epochs (patience 3; the spec says 40 and 6), so that a few minutes hold
more than a handful of trials on a loaded machine. ``--wide`` searches a space reaching well
beyond the budgets (units up to 1024, filters up to 256; the spec's stay within them but for the
widest MLPs' flash).

Every trained model is kept as shipped (``log_models = "all"``: the int8 ``.tflite``) and, after
the study, measured on the micro runtime (RAM, flash: the exported file's bytes) and scored on
the test split the search never saw: the same criterion for both arms. Each arm's pick is the
most accurate within both budgets by validation accuracy (what ``select`` would pick); its test
accuracy is reported.

Also, from the ``budgets`` arms: (2) measured RAM against the naive estimate
``4 × (params + largest activation)`` over the trained models within the budgets, and how many of
them the estimate puts on the wrong side of 16 KB; (3) the wall time of each RAM measurement (the
helper process's round trip) as a share of its trial's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "studies" / "mnist1d_micro.toml"
RAM_KB, FLASH_KB = 16, 64
EPOCHS = 8


def spec_text(arm: str, seed: int, wide: bool = False) -> str:
    text = SPEC.read_text().replace('name = "mnist1d_micro"', f'name = "micro-{arm}-{seed}"\nseed = {seed}')
    if wide:  # a space reaching well beyond the budgets: 4x the units, 4x the filters
        text = text.replace("units = [16, 256]", "units = [16, 1024]")
        text = text.replace("filters = [8, 64]", "filters = [8, 256]")
    text = text.replace("n_trials = 60", "n_trials = 10000")  # the wall time ends it
    # Short trainings, the same in both arms: a few minutes must hold more than a handful of trials.
    text = text.replace("max_epochs = 40", f"max_epochs = {EPOCHS}").replace("patience = 6", "patience = 3")
    if arm == "latency":
        text = text.replace(f"ram_kb = {RAM_KB} ", "# ram_kb").replace(f"flash_kb = {FLASH_KB} ", "# flash_kb")
    return text + '\n[tracking]\nlog_models = "all"\n'


def run_arm(arm: str, seed: int, seconds: float, folder: Path, wide: bool) -> dict[str, Any]:
    """One arm in this process: the study for ``seconds``, then its trained models measured and tested."""
    import optuna

    import tradeoff_search.trial._timing as timing
    from tradeoff_search import StudySpec, TradeoffObjective
    from tradeoff_search.study._open import make_sampler

    path = folder / f"{arm}-{seed}.toml"
    path.write_text(spec_text(arm, seed, wide))
    spec = StudySpec.load(path)
    ram_seconds: list[float] = []
    measure = timing.measure_rams

    def timed_measure(flatbuffers: Any, device: str) -> Any:  # instrumentation: the wait of a trial (one mode)
        start = time.perf_counter()
        try:
            return measure(flatbuffers, device)
        finally:
            ram_seconds.append(time.perf_counter() - start)

    timing.measure_rams = timed_measure
    objective = TradeoffObjective(spec, model_dir=folder / f"models-{arm}-{seed}")
    study = optuna.create_study(directions=objective.directions, sampler=make_sampler(spec))
    study.set_metric_names(objective.metric_names)
    started = time.monotonic()
    study.optimize(objective, timeout=seconds)
    wall = time.monotonic() - started
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trained = [_shipped(objective, t) for t in trials if t.user_attrs.get("trained")]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    return {"arm": arm, "seed": seed, "wall_seconds": wall, "complete": len(trials), "trained": len(trained),
            "over_budget": sum(t.user_attrs.get("trained") is False for t in trials), "models": trained,
            "ram_seconds": ram_seconds, "trial_seconds": durations}  # fmt: skip


def _shipped(objective: Any, trial: Any) -> dict[str, Any]:
    """A trained trial's shipped ``.tflite``: its RAM and flash, accuracies, and the naive estimate."""
    import numpy as np
    import optuna

    from tradeoff_search.cost._memory import RamMeasurement, measure_ram
    from tradeoff_search.trial._staging import trial_dir
    from tradeoff_search.trial._training import tflite_classes

    data = objective.data
    flatbuffer = (trial_dir(objective.model_dir, trial.number) / "model.tflite").read_bytes()
    ram = measure_ram(flatbuffer)
    test = float(np.mean(tflite_classes(flatbuffer, data.x_test) == data.y_test))
    model = objective.builders[trial.params["family"]](optuna.trial.FixedTrial(trial.params), data.input_shape,
                                                       data.n_classes)  # fmt: skip
    largest = max([int(np.prod(data.input_shape))] + [int(np.prod(layer.output.shape[1:])) for layer in model.layers])
    return {"trial": trial.number, "validation": trial.values[0], "test": test, "flash_bytes": len(flatbuffer),
            "ram_bytes": ram.arena_bytes if isinstance(ram, RamMeasurement) else None,
            "refusal": None if isinstance(ram, RamMeasurement) else str(ram),
            "naive_bytes": 4 * (trial.user_attrs["n_params"] + largest)}  # fmt: skip


def within(model: dict[str, Any]) -> bool:
    return model["ram_bytes"] is not None and model["ram_bytes"] <= RAM_KB * 1024 and model["flash_bytes"] <= (
        FLASH_KB * 1024)  # fmt: skip


def pick(run: dict[str, Any]) -> dict[str, Any] | None:
    fits = [m for m in run["models"] if within(m)]
    return max(fits, key=lambda m: m["validation"]) if fits else None


def report(runs: list[dict[str, Any]]) -> None:
    print(f"(1) best model within {RAM_KB} KB RAM and {FLASH_KB} KB flash, picked by validation accuracy:")
    for run in runs:
        chosen = pick(run)
        shown = "none fits" if chosen is None else (
            f"trial {chosen['trial']}: test {chosen['test']:.4f} (validation {chosen['validation']:.4f}), "
            f"RAM {chosen['ram_bytes'] / 1024:.2f} KB, flash {chosen['flash_bytes'] / 1024:.1f} KB")  # fmt: skip
        fits = sum(within(m) for m in run["models"])
        print(f"  seed {run['seed']} {run['arm']:8s} {run['wall_seconds']:5.0f} s: {run['complete']:3d} complete, "
              f"{run['trained']:3d} trained, {fits:3d} of them within; {shown}")  # fmt: skip
    for arm in ("budgets", "latency"):
        tests = [c["test"] if (c := pick(r)) else 0.0 for r in runs if r["arm"] == arm]
        print(f"  {arm}: mean test accuracy of the pick {statistics.mean(tests):.4f} over {len(tests)} seeds")
    budgeted = [m for r in runs if r["arm"] == "budgets" for m in r["models"] if m["ram_bytes"] is not None]
    if budgeted:
        ratios = sorted(m["naive_bytes"] / m["ram_bytes"] for m in budgeted)
        wrong = sum((m["naive_bytes"] <= RAM_KB * 1024) != (m["ram_bytes"] <= RAM_KB * 1024) for m in budgeted)
        print(f"(2) naive 4 x (params + largest activation) / measured RAM over {len(budgeted)} trained models: "
              f"{ratios[0]:.2f}-{ratios[-1]:.2f}x (median {statistics.median(ratios):.2f}); on the wrong side of "
              f"{RAM_KB} KB for {wrong}")  # fmt: skip
    ram = [s for r in runs if r["arm"] == "budgets" for s in r["ram_seconds"]]
    trial = [s for r in runs if r["arm"] == "budgets" for s in r["trial_seconds"]]
    if ram:
        print(f"(3) RAM measurement: median {statistics.median(ram) * 1e3:.0f} ms per candidate "
              f"(max {max(ram) * 1e3:.0f} ms); {sum(ram) / sum(trial):.1%} of the trials' time "
              f"(median trial {statistics.median(trial):.1f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall time of each study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--wide", action="store_true", help="units up to 1024, filters up to 256 (the spec: 256, 64)")
    parser.add_argument("--one", nargs=3, metavar=("ARM", "SEED", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        arm, seed, folder = args.one
        result = run_arm(arm, int(seed), args.minutes * 60, Path(folder), args.wide)
        (Path(folder) / "result.json").write_text(json.dumps(result))
        return
    runs = []
    for seed in args.seeds:
        for arm in ("budgets", "latency") if seed % 2 == 0 else ("latency", "budgets"):
            with tempfile.TemporaryDirectory() as folder:
                command = [sys.executable, __file__, "--minutes", str(args.minutes), "--one", arm, str(seed), folder,
                           *(["--wide"] if args.wide else [])]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(REPO)}
                subprocess.run(command, check=True, env=env, cwd=folder, stdout=subprocess.DEVNULL)
                runs.append(json.loads((Path(folder) / "result.json").read_text()))
            print(f"seed {seed} {arm}: done", file=sys.stderr)
            if args.json:
                args.json.write_text(json.dumps(runs, indent=1))
    report(runs)


if __name__ == "__main__":
    main()
