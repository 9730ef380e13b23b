"""The GP sampler: an optional extra (PyTorch), a clear spec error without it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest

from tradeoff_search import SpecError, StudySpec, run_study

from .conftest import TINY_SPEC

HAS_TORCH = importlib.util.find_spec("torch") is not None
GP_SPEC = TINY_SPEC.replace("seed = 1", 'seed = 1\nsampler = "gp"')


@pytest.mark.skipif(not HAS_TORCH, reason="the gp extra (PyTorch) is not installed")
def test_gp_sampler_runs_a_study_past_its_random_start(write_spec, tmp_path: Path, mlflow_store) -> None:
    spec = StudySpec.load(write_spec(GP_SPEC)).override(n_trials=12)  # GPSampler starts with 10 random trials
    # finish=False: the front's re-timing and the record's completion are not the sampler's (test_e2e has them)
    study = run_study(spec, storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=mlflow_store(), finish=False)
    assert isinstance(study.sampler, optuna.samplers.GPSampler)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 12
    assert study.best_trials


@pytest.mark.skipif(HAS_TORCH, reason="PyTorch is installed")
def test_gp_sampler_without_pytorch_is_a_spec_error(write_spec) -> None:
    with pytest.raises(SpecError, match=r"study\.sampler.*gp.*pip install 'tradeoff_search\[gp\]'"):
        StudySpec.load(write_spec(GP_SPEC))
