"""Running a study: storage, sampler, resume, the MLflow record."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from tradeoff_search._data import Dataset, load_dataset
from tradeoff_search._objective import TradeoffObjective
from tradeoff_search._retime import retime_front
from tradeoff_search._spec import SpecError, StudySpec
from tradeoff_search._tracking import MLflowParetoCallback

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

STATE_DIR = Path("mlruns")
DEFAULT_STORAGE = f"sqlite:///{STATE_DIR}/optuna.db"
DEFAULT_TRACKING_URI = f"sqlite:///{STATE_DIR}/mlflow.db"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_tracking_uri(uri: str) -> None:
    """Fail fast, before any store is touched, on a tracking URI MLflow could not use.

    A server is asked for ``/health`` (MLflow's own client would retry for minutes); a SQLite
    file needs its folder (``mlruns/`` is made for the default); MLflow 3.17 no longer accepts
    plain-folder stores.
    """
    import urllib.error
    import urllib.request

    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme in ("http", "https"):
        # Credentials go to MLflow by MLFLOW_TRACKING_USERNAME/PASSWORD; the probe needs none.
        netloc = parts.netloc.rpartition("@")[2]
        health = urlunsplit((scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=5) as answer:
                answer.read(64)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise SpecError(
                "--tracking-uri", "tracking_uri", redact(uri), f"a reachable MLflow server ({reason})"
            ) from None
    elif scheme in ("", "file"):
        raise SpecError(
            "--tracking-uri", "tracking_uri", uri, "a database URI such as sqlite:///mlruns/mlflow.db or a server URL"
        )
    elif scheme == "sqlite" and not uri.startswith(f"sqlite:///{STATE_DIR}/"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise SpecError(
                "--tracking-uri", "tracking_uri", uri, f"a SQLite file in an existing folder ({folder} is missing)"
            )


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    seed = spec.study.seed
    if spec.study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def _prepare_local_state(*urls: str) -> None:
    """Create ``mlruns/`` only when a default local store will live in it."""
    if any(url.startswith(f"sqlite:///{STATE_DIR}/") for url in urls):
        STATE_DIR.mkdir(exist_ok=True)


def open_study(spec: StudySpec, storage: str = DEFAULT_STORAGE, *, create: bool = True) -> optuna.Study:
    """The spec's study in ``storage``: created on first use, resumed after.

    Raises:
        SpecError: the storage cannot be reached, the study does not exist (``create=False``),
            or it exists with other objectives.
    """
    import optuna
    import sqlalchemy.exc

    if create:
        _prepare_local_state(storage)
    elif storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        # Loading would create an empty database: a query must not write.
        raise SpecError(spec.path, "study.name", spec.study.name, f"a study in {redact(storage)} (run it first)")
    try:
        if create:
            study = optuna.create_study(
                study_name=spec.study.name,
                storage=storage,
                directions=spec.directions,
                sampler=make_sampler(spec),
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(study_name=spec.study.name, storage=storage, sampler=make_sampler(spec))
    except KeyError:
        raise SpecError(
            spec.path, "study.name", spec.study.name, f"a study in {redact(storage)} (run it first)"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpecError("--storage", "storage", redact(storage), f"a reachable Optuna storage ({message})") from None
    if [d.name.lower() for d in study.directions] != spec.directions:
        found = [d.name.lower() for d in study.directions]
        raise SpecError(
            spec.path, "study.name", spec.study.name, f"a study with directions {spec.directions}, not {found}"
        )
    if create:
        if study.metric_names is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, and what plots and callbacks read
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(spec.metric_names)
        previous = study.user_attrs.get("spec_digest")
        if previous is None:
            study.set_user_attr("spec_digest", spec.digest)
        elif previous != spec.digest:
            _logger.warning(
                "study %r resumes under a changed spec (%s, was %s)", spec.study.name, spec.digest, previous
            )
    return study


def staging_dir(spec: StudySpec) -> Path:
    """Where trials leave their models for the MLflow callback (emptied as they are logged)."""
    return STATE_DIR / "staging" / spec.study.name


def make_callback(spec: StudySpec, tracking_uri: str = DEFAULT_TRACKING_URI) -> MLflowParetoCallback:
    """The MLflow callback for the spec's study, with the spec logged on the parent run."""
    _prepare_local_state(tracking_uri)
    return MLflowParetoCallback(
        tracking_uri=tracking_uri,
        experiment=spec.tracking.experiment,
        hypervolume_reference=spec.hypervolume_reference,
        log_models=spec.tracking.log_models,
        model_dir=staging_dir(spec),
        parent_tags={"spec.digest": spec.digest, "spec.path": str(spec.path)},
        parent_artifacts={"spec.json": spec.to_dict()},
    )


def finished_count(study: optuna.Study) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


def run_study(
    spec: StudySpec,
    *,
    storage: str = DEFAULT_STORAGE,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    data: Dataset | None = None,
    show_progress_bar: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> optuna.Study:
    """Run (or resume) the spec's study until it has ``study.n_trials`` finished trials.

    Data is loaded and checked before any store is touched, so a bad spec leaves nothing behind.
    Every trial is logged to MLflow as it ends; at the end (also after Ctrl-C) the parent run
    gets ``pareto.csv`` and the front plot.
    """
    import optuna

    data = data if data is not None else load_dataset(spec)
    check_tracking_uri(tracking_uri)
    study = open_study(spec, storage)
    callback = make_callback(spec, tracking_uri)
    _logger.info(
        "study %r: %d trials on %s; Optuna %s, MLflow %s",
        spec.study.name,
        spec.study.n_trials,
        spec.data.source,
        redact(storage),
        redact(tracking_uri),
    )
    remaining = spec.study.n_trials - finished_count(study)
    if remaining <= 0:
        _logger.info("study %r already has %d finished trials", spec.study.name, spec.study.n_trials)
    else:
        model_dir = staging_dir(spec) if spec.tracking.log_models != "none" else None
        objective = TradeoffObjective(spec, data=data, model_dir=model_dir)
        objective.calibrate(study)  # once, before any worker times a trial
        stop_at_target = optuna.study.MaxTrialsCallback(
            spec.study.n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        try:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=spec.study.timeout,
                callbacks=[callback, stop_at_target, *callbacks],
                catch=(Exception,),  # a failed trial is recorded as FAIL; the study goes on
                show_progress_bar=show_progress_bar,
            )
        finally:
            if finished_count(study):
                retime_front(study, objective)
            callback.finish(study)
    return study
