"""The contenders of compare.py: one search each, in its own process, under one wall-clock budget.

Every contender searches the space of the spec on its train and validation splits (never the
test split), then writes ``result.json`` (its completed trials: self-reported accuracy and cost,
completion time from its start, time spent measuring latency) and the ``.keras`` models of the
Pareto set it claims, in its own folder (the process's working directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import shutil
import signal
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _compare_scores import nondominated

from tradeoff_search import Dataset, StudySpec, load_dataset
from tradeoff_search.space._families import build_model
from tradeoff_search.space._space import Recipe, suggest_architecture, suggest_family, suggest_recipe
from tradeoff_search.spec._sections import TrainingSection
from tradeoff_search.trial._training import make_optimizer

if TYPE_CHECKING:
    import keras
    import optuna

CONTENDERS = ("tradeoff_search", "optuna_mlflow", "random", "keras_tuner")
PREDICT_CALLS = 20  # the hand-written objective's latency: median of this many model.predict(x[:1])
UNLIMITED_TRIALS = 10**6  # tradeoff_search runs until its timeout (tickets are queued as needed)
KERAS_TUNER_MAX_TRIALS = 100_000  # Keras Tuner has no time budget; the deadline stops it


@dataclass
class Budget:
    """A contender's wall-clock budget, from its start (after imports and data, the same for all),
    and the time it spent measuring latency."""

    seconds: float
    start: float = field(default_factory=time.time)  # wall clock, as Optuna's trial timestamps
    measuring: float = 0.0
    measuring_at_stop: float | None = None
    stopped_s: float | None = None
    expired: bool = False  # the deadline has passed (set by the alarm)
    _since: float | None = None

    def offset(self, moment: float) -> float:
        return moment - self.start

    @contextlib.contextmanager
    def measuring_latency(self) -> Iterator[None]:
        self._since = time.perf_counter()
        try:
            yield
        finally:
            self.measuring += time.perf_counter() - self._since
            self._since = None

    def timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function``, its time counted as time spent measuring latency."""

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.measuring_latency():
                return function(*args, **kwargs)

        return wrapper

    def _stop(self) -> None:
        if self.stopped_s is None:
            self.stopped_s = self.offset(time.time())
            in_flight = 0.0 if self._since is None else time.perf_counter() - self._since
            late = max(0.0, self.stopped_s - self.seconds)  # only what was spent within the budget counts
            self.measuring_at_stop = self.measuring + max(0.0, in_flight - late)

    @contextlib.contextmanager
    def enforced(self) -> Iterator[None]:
        """Run the search in this block until the budget is spent.

        At the deadline, SIGALRM raises KeyboardInterrupt, what Ctrl-C raises: Optuna, tradeoff_search
        and Keras Tuner all mark the running trial failed and let it through (tradeoff_search first
        re-times its front and completes its MLflow record, as after Ctrl-C). A trial still running
        then would complete after the deadline and not count anyway. An interrupt raised while
        Python runs a weakref callback is printed and dropped ("Exception ignored in"), so a search
        that cannot end by itself must also check ``expired`` (``DeadlineStop`` for Keras Tuner).
        """

        def expire(signum: int, frame: Any) -> None:
            self._stop()
            self.expired = True
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, expire)
        # Python runs the handler between bytecodes, so it waits for a long C call to return (a
        # GRU's LiteRT conversion takes seconds): _stop notes when it ran, and what completed or
        # was measured after the deadline is not counted.
        signal.setitimer(signal.ITIMER_REAL, max(0.001, self.seconds - self.offset(time.time())))
        try:
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)  # an alarm just before this is caught below
        except KeyboardInterrupt:
            if not self.expired:  # a real Ctrl-C
                raise
        finally:
            signal.signal(signal.SIGALRM, previous)
            self._stop()


class LatencyRecorder:
    """An Optuna callback: the seconds each trial spent measuring latency (the first trial's
    include tradeoff_search's one-off calibration)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.seconds: dict[int, float] = {}
        self._counted = 0.0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.seconds[trial.number] = self.budget.measuring - self._counted
        self._counted = self.budget.measuring


def optuna_trials(study: optuna.Study, budget: Budget, recorder: LatencyRecorder) -> tuple[list[dict], int]:
    """Completed trials as records ``(accuracy, latency_ms)``, and how many failed before the deadline."""
    import optuna

    records, failed = [], 0
    for trial in study.get_trials(deepcopy=False):
        if trial.datetime_complete is None:
            continue
        completed = budget.offset(trial.datetime_complete.timestamp())
        if trial.state == optuna.trial.TrialState.COMPLETE:
            accuracy, latency_ms = trial.values
            measuring = recorder.seconds.get(trial.number, 0.0)
            records.append({"number": trial.number, "completed_s": completed, "accuracy": accuracy,
                            "cost": latency_ms, "latency_seconds": measuring})  # fmt: skip
        elif trial.state == optuna.trial.TrialState.FAIL and completed < budget.seconds:
            failed += 1  # not the trial the deadline interrupted
    return records, failed


def finish(
    contender: str,
    seed: int,
    budget: Budget,
    cost_kind: str,
    trials: list[dict],
    failed: int,
    save_model: Callable[[int, Path], bool],
) -> None:
    """Keep the trials completed within the budget, claim their Pareto set by the contender's own
    values (accuracy up, cost down), save its models, write ``result.json``."""
    trials = sorted((t for t in trials if t["completed_s"] <= budget.seconds), key=lambda t: t["completed_s"])
    claimed = nondominated([(t["accuracy"], t["cost"]) for t in trials], (True, False))
    models = Path("models")
    models.mkdir(exist_ok=True)
    front, missing = [], []
    for trial, on_front in zip(trials, claimed, strict=True):
        if not on_front:
            continue
        path = models / f"trial-{trial['number']:04d}.keras"
        if save_model(trial["number"], path):
            front.append({**trial, "model": str(path)})
        else:
            missing.append(trial["number"])
    result = {
        "contender": contender,
        "seed": seed,
        "budget_seconds": budget.seconds,
        "cost_kind": cost_kind,
        "stopped_seconds": budget.stopped_s,
        "finished_seconds": budget.offset(time.time()),
        "latency_seconds": budget.measuring_at_stop,
        "failed_trials": failed,
        "missing_models": missing,
        "trials": trials,
        "front": front,
    }
    Path("result.json").write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------- tradeoff_search (and random)
def run_tradeoff_search(spec: StudySpec, data: Dataset, seed: int, budget_seconds: float, sampler: str) -> Budget:
    """``run_study`` with the spec's defaults, but a timeout instead of a trial count (and the sampler)."""
    import optuna

    from tradeoff_search import run_study
    from tradeoff_search.trial import _ship, _timing
    from tradeoff_search.trial._staging import staged_model_path, staging_dir

    timed = spec.override(n_trials=UNLIMITED_TRIALS, timeout=budget_seconds)
    timed = dataclasses.replace(timed, study=dataclasses.replace(timed.study, sampler=sampler, seed=seed))
    here = Path.cwd().resolve()
    storage, tracking = f"sqlite:///{here / 'optuna.db'}", f"sqlite:///{here / 'mlflow.db'}"
    budget = Budget(budget_seconds)
    # tradeoff_search does not record how long its measurements take: time, in this process only,
    # the three calls its objective makes for latency (LiteRT conversion, timing, calibration).
    for module, names in ((_timing, ("convert_as_shipped", "measure_latency", "calibrate_reference")),
                          (_ship, ("convert_as_shipped",))):  # fmt: skip
        for name in names:
            setattr(module, name, budget.timed(getattr(module, name)))
    recorder = LatencyRecorder(budget)
    with budget.enforced():
        run_study(timed, storage=storage, tracking_uri=tracking, data=data, callbacks=[recorder])
    study = optuna.load_study(study_name=timed.study.name, storage=storage)
    trials, failed = optuna_trials(study, budget, recorder)

    def save_model(number: int, path: Path) -> bool:
        """The model as a user gets it, from MLflow (``log_models = "pareto"``), or still staged
        if the deadline cut its logging short."""
        import mlflow.keras
        from mlflow import MlflowClient

        client = MlflowClient(tracking)
        mlflow.set_tracking_uri(tracking)
        experiment = client.get_experiment_by_name(timed.tracking.experiment)
        for run in client.search_runs([experiment.experiment_id], f"tags.`optuna.trial` = '{number}'"):
            if any(a.path == "model" for a in client.list_artifacts(run.info.run_id)):
                mlflow.keras.load_model(f"runs:/{run.info.run_id}/model").save(path)
                return True
        staged = staged_model_path(staging_dir(timed), number)
        if staged.is_file():
            shutil.copy(staged, path)
            return True
        return False

    name = "tradeoff_search" if sampler == "tpe" else sampler
    finish(name, seed, budget, "litert_latency_ms", trials, failed, save_model)
    return budget


# ---------------------------------------------------------------------- what users write today
def compile_like_a_user(model: keras.Model, recipe: Recipe, data: Dataset, training: TrainingSection) -> None:
    """Plain ``compile``: the recipe's optimizer and schedule (the same as tradeoff_search's, so
    the space is the same), the usual loss, accuracy as the metric, Keras' defaults otherwise."""
    steps_per_epoch = math.ceil(len(data.y_train) / recipe.batch_size)
    loss = "binary_crossentropy" if data.n_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch, training.max_epochs), loss=loss,
                  metrics=["accuracy"])  # fmt: skip


def early_stopping(training: TrainingSection) -> keras.callbacks.Callback:
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=training.patience, restore_best_weights=True)


def predict_latency_ms(model: keras.Model, x: Any) -> float:
    """Latency as users measure it: the median wall time of ``model.predict`` on one example."""
    times = []
    for _ in range(PREDICT_CALLS):
        start = time.perf_counter()
        model.predict(x, verbose=0)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def run_optuna_mlflow(spec: StudySpec, data: Dataset, seed: int, budget_seconds: float) -> Budget:
    """A hand-written two-objective Optuna study with Optuna's default sampler, ``model.fit`` with
    early stopping, ``model.predict`` latency, and optuna-integration's ``MLflowCallback``."""
    import keras
    import optuna

    # Deprecated since Optuna 4.9 but what users have; the warning would only fill the log.
    warnings.filterwarnings("ignore", message="MLflowCallback has been deprecated", category=FutureWarning)
    from optuna_integration import MLflowCallback

    keras.utils.set_random_seed(seed)
    models = Path("models")
    models.mkdir(exist_ok=True)
    budget = Budget(budget_seconds)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        candidate = suggest_architecture(trial, spec.model, suggest_family(trial, spec))
        recipe = suggest_recipe(trial, spec)
        model = build_model(candidate, data.input_shape, data.n_classes)
        compile_like_a_user(model, recipe, data, spec.training)
        model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), batch_size=recipe.batch_size,
                  epochs=spec.training.max_epochs, callbacks=[early_stopping(spec.training)], verbose=0)  # fmt: skip
        accuracy = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["accuracy"]
        with budget.measuring_latency():
            latency_ms = predict_latency_ms(model, data.x_val[:1])
        model.save(models / f"trial-{trial.number:04d}.keras")  # Optuna keeps no models
        return accuracy, latency_ms

    tracking = f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    mlflow_callback = MLflowCallback(tracking_uri=tracking, metric_name=["accuracy", "latency_ms"])
    recorder = LatencyRecorder(budget)
    # Optuna's default sampler (TPE in Optuna 5), seeded.
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=seed))
    with budget.enforced():
        study.optimize(objective, timeout=budget_seconds, callbacks=[mlflow_callback, recorder])
    trials, failed = optuna_trials(study, budget, recorder)
    finish("optuna_mlflow", seed, budget, "predict_latency_ms", trials, failed, lambda number, path: path.is_file())
    return budget


def run_keras_tuner(spec: StudySpec, data: Dataset, seed: int, budget_seconds: float) -> Budget:
    """Keras Tuner ``RandomSearch`` on validation accuracy; its front is taken afterwards by
    parameter count, the only cost it knows of."""
    import keras
    from _compare_keras_tuner import DeadlineStop, SpaceHyperModel, TimedRandomSearch

    keras.utils.set_random_seed(seed)
    budget = Budget(budget_seconds)
    hypermodel = SpaceHyperModel(spec, data)
    tuner = TimedRandomSearch(hypermodel, objective="val_accuracy", max_trials=KERAS_TUNER_MAX_TRIALS, seed=seed,
                              directory=".", project_name="keras_tuner", overwrite=True)  # fmt: skip
    with budget.enforced():
        callbacks = [early_stopping(spec.training), DeadlineStop(budget)]
        tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                     epochs=spec.training.max_epochs, callbacks=callbacks, verbose=0)  # fmt: skip
    trials, by_number = [], {}
    for trial_id, moment in tuner.completed.items():
        trial = tuner.oracle.get_trial(trial_id)
        if trial.score is None:
            continue
        keras.backend.clear_session()
        params = hypermodel.build(trial.hyperparameters).count_params()
        by_number[int(trial_id)] = trial
        trials.append({"number": int(trial_id), "completed_s": budget.offset(moment), "accuracy": float(trial.score),
                       "cost": float(params), "latency_seconds": 0.0})  # fmt: skip
    failed = sum(1 for trial in tuner.oracle.trials.values() if trial.status in ("FAILED", "INVALID"))

    def save_model(number: int, path: Path) -> bool:
        tuner.load_model(by_number[number]).save(path)  # the best epoch's weights, as Keras Tuner keeps them
        return True

    finish("keras_tuner", seed, budget, "params", trials, failed, save_model)
    return budget


def run(contender: str, spec_path: Path, seed: int, minutes: float) -> None:
    """Run one contender in this process, in the current directory (its own folder)."""
    # Imported before any clock starts: costs every contender would pay alike.
    import keras  # noqa: F401
    import mlflow  # noqa: F401

    spec = StudySpec.load(spec_path)
    data = load_dataset(spec)  # MNIST-1D, generated locally; its test split is left unused here
    seconds = minutes * 60
    if contender == "tradeoff_search":
        run_tradeoff_search(spec, data, seed, seconds, "tpe")
    elif contender == "random":
        run_tradeoff_search(spec, data, seed, seconds, "random")
    elif contender == "optuna_mlflow":
        run_optuna_mlflow(spec, data, seed, seconds)
    elif contender == "keras_tuner":
        run_keras_tuner(spec, data, seed, seconds)
    else:
        raise ValueError(f"contender {contender!r}: expected one of {CONTENDERS}")
