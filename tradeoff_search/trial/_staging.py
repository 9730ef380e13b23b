"""Staged model files: where a trained model waits for the MLflow record, and its life cycle.

A study stages under one folder (:func:`staging_dir`): a trial whose model may be logged leaves
it in ``trial-NNNN/`` (:func:`stage_model`: ``model.keras`` and the ``model.tflite`` to ship, their
sha256 in the trial's ``model_sha256``); a quantization variant in ``variant-NNNN-MODE/`` (NNNN the
trial that trained it) until it is added as a trial of its own and its folder is renamed after
that trial (see ``_variants``). The MLflow callback logs a trial's files only if they are those
the trial recorded (:func:`holds_recorded`), then removes them (:func:`remove_staged`); ``sync``
removes what nobody will log (:func:`drop_provisional`).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tradeoff_search.cost._convert import to_tflite
from tradeoff_search.record._keys import MODEL_DIGESTS_ATTR, PREPROCESSING_FILE
from tradeoff_search.spec._sections import QUANTIZATIONS
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.stores import STATE_DIR

if TYPE_CHECKING:
    import keras
    import optuna

MODEL_FILES = ("model.keras", "model.tflite")  # what a trial stages, and its run holds


def staging_dir(spec: StudySpec) -> Path:
    """Where the trials of ``spec``'s study leave their models (emptied as they are logged)."""
    return STATE_DIR / "staging" / spec.study.name


def trial_dir(model_dir: Path, number: int) -> Path:
    """The folder of trial ``number``'s staged model files."""
    return Path(model_dir) / f"trial-{number:04d}"


def staged_model_path(model_dir: Path, number: int) -> Path:
    """Where an objective leaves trial ``number``'s Keras model for the MLflow callback to log."""
    return trial_dir(model_dir, number) / MODEL_FILES[0]


def provisional_dir(model_dir: Path, number: int, mode: str) -> Path:
    """Where a variant of trial ``number`` stages its model files until it has a number of its own."""
    return Path(model_dir) / f"variant-{number:04d}-{mode}"


def stage(
    directory: Path, model: keras.Model, flatbuffer: bytes | None = None, preprocessing: bytes | None = None
) -> dict[str, str]:
    """Write ``model.keras`` and the LiteRT ``model.tflite`` to ship (``flatbuffer``, e.g. quantized;
    by default the float32 conversion) to ``directory``; returns their sha256, and that of the
    ``preprocessing.json`` the model takes (a table's encoding, which ``select`` ships with it only
    if the data still gives it) as ``preprocessing.json``'s."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILES[0])
    (directory / MODEL_FILES[1]).write_bytes(to_tflite(model) if flatbuffer is None else flatbuffer)
    bound = {} if preprocessing is None else {PREPROCESSING_FILE: hashlib.sha256(preprocessing).hexdigest()}
    return _digests(directory) | bound


def stage_model(
    trial: optuna.Trial,
    model: keras.Model,
    model_dir: Path,
    flatbuffer: bytes | None = None,
    preprocessing: bytes | None = None,
) -> None:
    """Leave a trained model for the callback (see :func:`stage`), its digests in the trial, so that
    what is later read back from MLflow (or from the staging folder) can be checked against the storage."""
    digests = stage(trial_dir(model_dir, trial.number), model, flatbuffer, preprocessing)
    trial.set_user_attr(MODEL_DIGESTS_ATTR, digests)


def holds_recorded(model_dir: Path, trial: optuna.trial.FrozenTrial) -> bool | None:
    """Whether the trial's staging folder holds the model files the trial recorded (their
    sha256 in ``model_sha256``); None when it has no staging folder."""
    directory = trial_dir(model_dir, trial.number)
    if not directory.is_dir():
        return None
    if not all((directory / name).is_file() for name in MODEL_FILES):
        return False
    recorded = trial.user_attrs.get(MODEL_DIGESTS_ATTR) or {}
    return all(recorded.get(name) == digest for name, digest in _digests(directory).items())


def remove_staged(model_dir: Path, number: int) -> None:
    """Remove trial ``number``'s staged files (logged, or never to be)."""
    shutil.rmtree(trial_dir(model_dir, number), ignore_errors=True)


def discard(staged: Path) -> None:
    """Remove a variant's staged folder: it will never be added (its trained trial did not complete)."""
    shutil.rmtree(staged, ignore_errors=True)


def rename_provisional(staged: Path, number: int) -> None:
    """A variant's staged folder (see :func:`provisional_dir`) becomes that of its trial, ``number``."""
    target = trial_dir(staged.parent, number)
    shutil.rmtree(target, ignore_errors=True)
    staged.rename(target)


def drop_provisional(model_dir: Path, number: int) -> int:
    """Remove the files the variants of trial ``number`` staged and were never added with (see
    ``_variants``); returns how many folders there were. Only once no worker can still add
    them: the trial finished and the process that ran it has ended (or long ago)."""
    folders = [provisional_dir(model_dir, number, mode) for mode in QUANTIZATIONS]
    present = [folder for folder in folders if folder.is_dir()]
    for folder in present:
        shutil.rmtree(folder, ignore_errors=True)
    return len(present)


def file_digest(path: Path) -> str:
    """The sha256 of a model file, as ``model_sha256`` records it."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _digests(directory: Path) -> dict[str, str]:
    return {name: file_digest(directory / name) for name in MODEL_FILES}
