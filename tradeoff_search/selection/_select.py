"""From a front to one shipped model: pick by a rule, test it, export it, re-time it, register it."""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tradeoff_search.cost._convert import quantization_of, tensor_types
from tradeoff_search.cost._latency import measure_latency
from tradeoff_search.cost._memory import RamMeasurement, measure_ram
from tradeoff_search.data import Dataset, load_dataset, preprocessing_file
from tradeoff_search.data._dataset import data_change, data_changed
from tradeoff_search.record._keys import (
    CALIBRATION_ATTR,
    DATA_DIGEST_ATTR,
    MODEL_DIGESTS_ATTR,
    PARENT_RUN_ATTR,
    PREPROCESSING_ATTR,
    PREPROCESSING_FILE,
    STUDY_UID_ATTR,
)
from tradeoff_search.rules import POSITIVE, Interval, OrNone, RunError, Scalar, SpecError
from tradeoff_search.selection._budgets import (
    NoneFits,
    Point,
    binding_words,
    describe,
    front_costs,
    pick_within,
)
from tradeoff_search.selection._export import export, written_before
from tradeoff_search.space._builders import keras_classes, spec_builders
from tradeoff_search.spec._sections import micro_installed
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.spec._validation import ParameterError, validate_params
from tradeoff_search.stores import DEFAULT_TRACKING_URI
from tradeoff_search.tracking._repair import IntegrityError
from tradeoff_search.tracking._run_index import TAG_TRIAL, filter_value, tracking_client
from tradeoff_search.tracking._trial_runs import RUN_FILES
from tradeoff_search.trial._staging import file_digest
from tradeoff_search.trial._training import predict_classes, score, tflite_classes

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

_logger = logging.getLogger(__name__)

# max_latency: budget with max_latency_ms, as it was named before budgets on RAM and flash
RULES = ("knee", "budget", "max_latency", "min_accuracy", "mnas")


@dataclass(frozen=True)
class Selection:
    """The chosen model: where it came from, how it scores, where it went."""

    trial: int
    rule: str
    validation_accuracy: float
    test_accuracy: float
    latency_ms: float  # of the front (re-timed side by side when the study has it)
    exported_latency_ms: float  # the exported .tflite, timed again
    keras_path: str
    tflite_path: str
    registered_model: str
    registered_version: str
    preprocessing_path: str | None = None  # tables: raw columns → the model's input, as JSON
    quantization: str = "none"
    input_type: str = "float32"  # of the exported .tflite
    output_type: str = "float32"
    test_accuracy_float: float | None = None  # a quantized model's float Keras model, on the test split
    ram_bytes: int | None = None  # on the micro runtime, as the trial measured it (None: not measured, or refused)
    flash_bytes: int = 0  # the exported .tflite's size
    binding: str = ""  # by budget: which budget binds, in words


def pick(
    points: Sequence[tuple[int, float, float]],
    rule: str,
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    mnas_weight: float = -0.07,
    target_ms: float | None = None,
) -> int:
    """The trial number chosen among ``(trial, accuracy, latency_ms)`` points of a front.

    - ``knee``: farthest from the chord between the front's two ends, with accuracy and
      log-latency both scaled to [0, 1] (the point where speed starts to cost most accuracy);
    - ``max_latency``: the most accurate within ``max_latency_ms`` (``budget`` with latency alone,
      see :func:`~tradeoff_search.selection._budgets.pick_within` for RAM and flash too);
    - ``min_accuracy``: the fastest with at least ``min_accuracy``;
    - ``mnas``: the MnasNet reward ``accuracy · (latency / target)^w`` (``w`` negative; target:
      ``target_ms``, default the front's median latency).

    Raises:
        ValueError: no point satisfies the rule.
    """
    if not points:
        raise ValueError("the study has no Pareto-optimal trial yet")
    if rule == "max_latency":
        assert max_latency_ms is not None, "the rule's threshold is checked by select_model"
        return pick_within([Point(*p) for p in points], {"max_latency_ms": max_latency_ms}).trial
    if rule == "min_accuracy":
        assert min_accuracy is not None, "the rule's threshold is checked by select_model"
        eligible = [p for p in points if p[1] >= min_accuracy]
        if not eligible:
            raise ValueError(f"no Pareto model reaches accuracy {min_accuracy} (best: {max(p[1] for p in points):.4g})")
        return min(eligible, key=lambda p: (p[2], -p[1]))[0]
    if rule == "mnas":
        target = target_ms or sorted(p[2] for p in points)[len(points) // 2]
        return max(points, key=lambda p: p[1] * (p[2] / target) ** mnas_weight)[0]
    if rule == "knee":
        if len(points) < 3:
            return max(points, key=lambda p: p[1])[0]
        xs = [math.log10(p[2]) for p in points]
        ys = [p[1] for p in points]

        def scaled(values: list[float], v: float) -> float:
            span = max(values) - min(values)
            return (v - min(values)) / span if span > 0 else 0.0

        coords = [(scaled(xs, x), scaled(ys, y)) for x, y in zip(xs, ys, strict=True)]
        (x0, y0), (x1, y1) = min(coords), max(coords)
        norm = math.hypot(x1 - x0, y1 - y0) or 1.0
        distance = [abs((y1 - y0) * x - (x1 - x0) * y + x1 * y0 - y1 * x0) / norm for x, y in coords]
        return points[max(range(len(points)), key=distance.__getitem__)][0]
    raise ValueError(f"rule={rule!r}: expected one of {RULES}")


def front_points(study: optuna.Study) -> list[tuple[int, float, float]]:
    """``(trial, accuracy, latency_ms)`` of the front to choose from (see :func:`front_costs`)."""
    return [(p.trial, p.accuracy, p.latency_ms) for p in front_costs(study)]


@validate_params(
    rule=Scalar(str, choices=RULES),
    max_latency_ms=OrNone(Scalar(float, POSITIVE)),
    max_ram_kb=OrNone(Scalar(float, POSITIVE)),
    max_flash_kb=OrNone(Scalar(float, POSITIVE)),
    min_accuracy=OrNone(Scalar(float, Interval(0, 1, low_open=True))),
    mnas_weight=Scalar(float),
    target_ms=OrNone(Scalar(float, POSITIVE)),
)
def select_model(
    spec: StudySpec,
    study: optuna.Study,
    out: str | Path,
    *,
    rule: str = "knee",
    tracking_uri: str = DEFAULT_TRACKING_URI,
    max_latency_ms: float | None = None,
    max_ram_kb: float | None = None,
    max_flash_kb: float | None = None,
    min_accuracy: float | None = None,
    mnas_weight: float = -0.07,
    target_ms: float | None = None,
) -> Selection:
    """Pick one model of the study's front by ``rule`` (see :func:`pick`), evaluate its
    ``model.tflite`` (as shipped: in the trial's quantization mode) with the LiteRT interpreter on
    the test split the search never saw, time it, export it with ``model.keras`` (and, for a table,
    ``preprocessing.json``: how raw rows become the model's input) to ``out``, which must be absent,
    empty or hold only what an earlier ``select`` wrote there (listed in ``selection.json`` with each
    file's sha256, and replaced), and register it in the MLflow Model Registry as
    ``<study>-selected`` with the rule, latency and accuracies as tags.

    By budget (``rule="budget"``, or ``"max_latency"`` with ``max_latency_ms`` alone): the most
    accurate model within all of ``max_latency_ms``, ``max_ram_kb`` and ``max_flash_kb`` given
    (RAM and flash in kB of 1024 bytes, as the trials measured them), and which budget binds
    (:attr:`Selection.binding`; see ``tradeoff_search.selection._budgets``).

    Raises:
        ParameterError: a parameter breaks its rule, no front model meets the rule's threshold,
            or ``out`` holds files select did not write.
        RunError: the study has no front yet, or the chosen model was not logged to MLflow
            (``log_models = "none"``).
        SpecError: the data is not the study's, or its encoding not the one the chosen model takes.
        IntegrityError: no run of the study in MLflow holds the model files the trial recorded.
    """
    if len(study.directions) < 2:
        raise ValueError(f"study {study.study_name!r}: expected accuracy and latency objectives, got 1 objective")
    budgets = {"max_latency_ms": max_latency_ms, "max_ram_kb": max_ram_kb, "max_flash_kb": max_flash_kb}
    chosen, binding = _choose(spec, study, rule, budgets, min_accuracy=min_accuracy, mnas_weight=mnas_weight,
                              target_ms=target_ms)  # fmt: skip
    number = chosen.trial
    out = Path(out)
    previous = written_before(out)
    data = load_dataset(spec)
    preprocessing = _preprocessing(spec, study, number, data)
    client = tracking_client(tracking_uri)
    run_id, tested = _test_and_export(client, spec, study, chosen, data, preprocessing, out, previous, rule)
    tags = {"rule": rule, "trial": number, "validation_accuracy": chosen[1], "test_accuracy": tested.accuracy,
            "latency_ms": chosen[2], "exported_latency_ms": tested.latency_ms, "quantization": tested.quantization,
            **tested.types, "flash_bytes": tested.flash_bytes}  # fmt: skip
    tags |= {"ram_bytes": tested.ram_bytes} if tested.ram_bytes is not None else {}
    tags |= {"binding": binding} if binding else {}
    name, version = _register(client, study, run_id, tags)
    _logger.info("selected trial %d by %s: test accuracy %.4f, %.4g ms", number, rule, tested.accuracy,
                 tested.latency_ms)  # fmt: skip
    shipped = None if preprocessing is None else str(out / PREPROCESSING_FILE)
    return Selection(number, rule, chosen[1], tested.accuracy, chosen[2], tested.latency_ms, str(out / "model.keras"),
                     str(out / "model.tflite"), name, version, shipped, tested.quantization,
                     tested.types["input_type"], tested.types["output_type"], tested.float_accuracy,
                     tested.ram_bytes, tested.flash_bytes, binding)  # fmt: skip


def _test_and_export(
    client: MlflowClient,
    spec: StudySpec,
    study: optuna.Study,
    chosen: Point,
    data: Dataset,
    preprocessing: bytes | None,
    out: Path,
    previous: list[str],
    rule: str,
) -> tuple[str, _Tested]:
    """Download the chosen trial's verified model files, test them, and export them with
    ``preprocessing`` (see :func:`export`); returns the trial's run and what the test found."""
    with tempfile.TemporaryDirectory() as download:  # through our client: no global MLflow state
        run_id, files = verified_model(client, spec, study, chosen.trial, Path(download))
        tested = _tested(spec, study, chosen, files, data)
        if preprocessing is not None:
            files[PREPROCESSING_FILE] = Path(download) / PREPROCESSING_FILE
            files[PREPROCESSING_FILE].write_bytes(preprocessing)
        about = {"study": study.study_name, "study_uid": study.user_attrs.get(STUDY_UID_ATTR), "trial": chosen.trial}
        export(out, files, previous, {**about, "rule": rule})
    return run_id, tested


def _register(client: MlflowClient, study: optuna.Study, run_id: str, tags: dict[str, object]) -> tuple[str, str]:
    """Register the model of ``run_id`` as a version of ``<study>-selected`` with ``tags``; its name and version."""
    name = f"{study.study_name}-selected"
    if not client.search_registered_models(f"name = {filter_value(name)}"):
        client.create_registered_model(name, description=f"Models selected from the Pareto front of {study.study_name}")
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    for key, tag in tags.items():
        client.set_model_version_tag(name, version.version, key, str(tag))
    return name, str(version.version)


@dataclass(frozen=True)
class _Tested:
    """The chosen model's files as tested before they are exported."""

    accuracy: float  # of the .tflite, on the test split
    float_accuracy: float | None  # of a quantized model's float Keras model
    quantization: str
    latency_ms: float  # the .tflite timed again (normalized by the study's calibration, if any)
    types: dict[str, str]  # its input_type and output_type
    flash_bytes: int  # the .tflite's size
    ram_bytes: int | None  # on the micro runtime (see _ram_of)


def _tested(spec: StudySpec, study: optuna.Study, chosen: Point, files: dict[str, Path], data: Dataset) -> _Tested:
    """Score the chosen trial's verified files on the test split the search never saw, and time the ``.tflite``."""
    import keras

    assert data.x_test is not None and data.y_test is not None, "a spec's data source always has a test split"
    # The file itself, not mlflow.keras.load_model: the flavor's MLmodel may point it at any
    # path, a TensorFlow SavedModel, or code to import. safe_mode runs no lambda from the file.
    custom_objects = keras_classes(spec_builders(spec).values())  # your layers, from your builders' modules
    model = keras.saving.load_model(files["model.keras"], custom_objects=custom_objects, compile=False,
                                    safe_mode=True)  # fmt: skip
    metric = spec.objectives.accuracy
    quantization = quantization_of(study.get_trials(deepcopy=False)[chosen.trial].params)
    shipped = files["model.tflite"].read_bytes()  # the verified file: quantized as the trial was, if it was
    accuracy = score(metric, data.y_test, tflite_classes(shipped, data.x_test))
    float_accuracy = None if quantization == "none" else score(metric, data.y_test, predict_classes(model, data.x_test))
    latency = spec.latency
    stats = measure_latency(shipped, runtime="litert", batch_size=latency.batch_sizes[0],
                            threads=latency.threads, statistic=latency.statistic, max_seconds=2.0,
                            device=latency.device)  # fmt: skip
    calibration = study.user_attrs.get(CALIBRATION_ATTR, {}).get(f"{latency.statistic}_ms")
    exported_ms = stats.normalized_ms(calibration) if calibration else stats.value_ms
    return _Tested(accuracy, float_accuracy, quantization, exported_ms, tensor_types(shipped), len(shipped),
                   _ram_of(shipped, chosen))  # fmt: skip


def _preprocessing(spec: StudySpec, study: optuna.Study, number: int, data: Dataset) -> bytes | None:
    """``preprocessing.json`` for trial ``number``'s model: the data's encoding, if the trial's model
    takes it (its sha256 recorded beside the model's); the study's one encoding for a trial of a
    study recorded before trials bound theirs.

    Raises:
        SpecError: the data is not what the study runs on, or gives another encoding than the
            one the trial's model takes.
    """
    change = data_change(spec, study.user_attrs.get(DATA_DIGEST_ATTR), data.digest)
    if change is not None:
        raise data_changed(spec, change, study.study_name)
    now = None if data.preprocessing is None else preprocessing_file(data.preprocessing)
    recorded = (study.get_trials(deepcopy=False)[number].user_attrs.get(MODEL_DIGESTS_ATTR) or {}).get(
        PREPROCESSING_FILE
    )
    if recorded is None:
        legacy = study.user_attrs.get(PREPROCESSING_ATTR)
        if legacy is None:
            return now
        _logger.warning("trial %d records no encoding of its own: shipping the study's, unchecked", number)
        return preprocessing_file(legacy)
    if now is None or hashlib.sha256(now).hexdigest() != recorded:
        gives = "none" if now is None else f"sha256 {hashlib.sha256(now).hexdigest()[:12]}"
        expected = (f"the data trial {number} was trained on (its model takes the encoding of sha256 "
                    f"{recorded[:12]}, the data now gives {gives}); restore it or select another trial")  # fmt: skip
        raise SpecError(spec.path, "data.source", spec.data.source, expected)
    return now


def _ram_of(shipped: bytes, chosen: Point) -> int | None:
    """RAM of the exported file on the micro runtime: measured again where the runtime is installed
    (the file with its signature; the trial measured the file it timed), else as the trial recorded."""
    if not micro_installed():
        return None if chosen.ram_bytes is None else int(chosen.ram_bytes)
    measured = measure_ram(shipped)
    return measured.arena_bytes if isinstance(measured, RamMeasurement) else None


def _choose(
    spec: StudySpec,
    study: optuna.Study,
    rule: str,
    budgets: dict[str, float | None],
    *,
    min_accuracy: float | None,
    mnas_weight: float,
    target_ms: float | None,
) -> tuple[Point, str]:
    """The front's model ``rule`` picks, and by budget what binds, in words.

    Raises:
        ValueError: the rule lacks its value, or a budget is given to another rule.
        RunError: the study has no front.
        ParameterError: no model of the front meets the rule's value.
    """
    given = {name: limit for name, limit in budgets.items() if limit is not None}
    by_budget = rule in ("budget", "max_latency")
    # The rules that need a value, by the parameter that gives it.
    needs = {"max_latency": ("max_latency_ms", budgets["max_latency_ms"]),
             "min_accuracy": ("min_accuracy", min_accuracy),
             "budget": ("max_latency_ms, max_ram_kb or max_flash_kb", given or None)}  # fmt: skip
    key, value = needs.get(rule, ("rule", rule))
    if value is None:
        raise ValueError(f"rule={rule!r} needs {key}")
    if given and not by_budget:
        raise ValueError(f"{', '.join(given)}: budgets, for rule='budget' (rule={rule!r})")
    points = front_costs(study)
    if not points:
        raise RunError(spec.path, "study.name", study.study_name, "a study with a front to choose from (run it first)")
    if by_budget:
        try:
            chosen = pick_within(points, given)
        except NoneFits as error:
            raise ParameterError("select_model", error.budget, given[error.budget],
                                 f"a budget some front model meets ({error})") from None  # fmt: skip
        words = f"within {describe(given)}: {binding_words(chosen, points)}"
        return next(p for p in points if p.trial == chosen.trial), words
    try:
        number = pick([p[:3] for p in points], rule, min_accuracy=min_accuracy, mnas_weight=mnas_weight,
                      target_ms=target_ms)  # fmt: skip
    except ValueError as error:
        raise ParameterError("select_model", key, value, f"a value some front model meets ({error})") from None
    return next(p for p in points if p.trial == number), ""


def verified_model(
    client: MlflowClient, spec: StudySpec, study: optuna.Study, number: int, folder: Path
) -> tuple[str, dict[str, Path]]:
    """Trial ``number``'s run and its model files, downloaded to ``folder``, whose sha256 are
    those the trial recorded in the Optuna storage.

    Runs are those under the study's own parent run (named in the storage); anyone who can write
    to the MLflow server can add runs with any tags there, so each is checked, oldest first; the
    first with the recorded files is the trial's, and any other is passed over with a warning.

    Raises:
        RunError: the trial's model was never logged (``log_models = "none"``, or off the front).
        IntegrityError: no run holds the files the trial recorded.
    """
    from mlflow.exceptions import MlflowException

    trial = study.get_trials(deepcopy=False)[number]
    digests = trial.user_attrs.get(MODEL_DIGESTS_ATTR)
    parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    if digests is None or parent_id is None or experiment is None:
        missing = f"trial {number}'s model is not in MLflow"
        raise RunError(spec.path, "tracking.log_models", spec.tracking.log_models, f"pareto or all ({missing})")
    query = f"tags.`mlflow.parentRunId` = {filter_value(parent_id)} and tags.`{TAG_TRIAL}` = '{number}'"
    runs = client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])
    others = []
    for run in runs:
        run_id = run.info.run_id
        files: dict[str, Path] = {}
        try:
            for name, artifact in RUN_FILES.items():
                files[name] = Path(client.download_artifacts(run_id, artifact, str(folder / run_id)))
        except (MlflowException, OSError):
            others.append(run_id)
            continue
        if all(file_digest(path) == digests.get(name) for name, path in files.items()):
            if len(runs) > 1:
                passed = [r.info.run_id for r in runs if r.info.run_id != run_id]
                _logger.warning("trial %d: run(s) %s claim this trial too: passed over", number, ", ".join(passed))
            return run_id, files
        others.append(run_id)
    if not others:
        missing = f"trial {number}'s model is not in MLflow"
        raise RunError(spec.path, "tracking.log_models", spec.tracking.log_models, f"pareto or all ({missing})")
    raise IntegrityError(
        f"trial {number}: no MLflow run holds the model the study recorded (model.keras sha256 "
        f"{digests['model.keras'][:12]}…); run(s) {', '.join(others)} hold other files: not shipped"
    )
