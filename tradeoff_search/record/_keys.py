"""The trial record: every name a stage writes into the Optuna storage and another reads back.

A trial flows one way (objective → trial loop → MLflow callback, pareto tables, ``select``, the
CLI); what passes between them through the storage is named here once, so that no stage repeats
another's strings. Optuna's storage is the truth; MLflow shows these names as metrics and tags.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- trial user attributes
N_PARAMS = "n_params"  # Keras parameter count (logged to MLflow as the metric ``params``)
MACS = "macs"  # multiply-accumulates of one inference
MACS_UNCOUNTED = "macs_uncounted"  # layers whose MACs nobody counts (a user builder's)
MODEL_BYTES = "model_bytes"  # size of the ``.tflite`` as shipped (quantized in a quantized trial)
RAM_BYTES = "ram_bytes"  # the micro runtime's minimum tensor arena for the .tflite (see cost._memory)
RAM_REFUSAL = "ram_refusal"  # why the micro runtime cannot run the .tflite (then no ram_bytes)
LATENCY = "latency"  # LatencyStats.to_dict() of the primary batch size, plus ``normalized_ms``
NORMALIZED_MS = "normalized_ms"  # key of LATENCY: the calibrated latency, the objective's value
TRAINED = "trained"  # False for a candidate recorded over the latency budget
TRAIN_SECONDS = "train_seconds"
EPOCHS = "epochs"
HISTORY = "history"  # per-epoch curves, by the names of CURVES
CONTAINS_TRIAL = "contains_trial"  # the over-budget trial whose model this candidate contains
MODEL_DIGESTS_ATTR = "model_sha256"  # {file name: sha256} of the model files the trial produced
PREPROCESSING_FILE = "preprocessing.json"  # key of MODEL_DIGESTS_ATTR: the table encoding the model takes
FAIL_REASON = "fail_reason"  # ``Type: message`` of a failed trial (Optuna keeps no reason)
DEVICE_FAILURE = "device_unreachable"  # True: the trial failed because the latency server did not answer
TRACEBACK = "traceback"  # a failed trial's traceback (also ``traceback.txt`` on its MLflow run)
PRUNE_REASON = "prune_reason"  # why a trial was stopped early
ACCURACY_FLOAT = "accuracy_float"  # a quantized trial's float Keras model's validation accuracy
CONVERSION_WARNINGS = "conversion_warnings"  # what the converter warned about, quantizing the trial's model
VARIANT_OF = "variant_of"  # a variant's: the number of the trial that trained its model (see _variants)

# ---------------------------------------------------------------------- trial parameters
QUANTIZATION_PARAM = "quantization"  # the trial's quantization mode, when the spec has any but "none"

# ---------------------------------------------------------------------- trial system attributes
WORKER_ATTR = "tradeoff_search:worker"  # host:pid of the process running the trial
# That process's boot id and start time (see process_identity): a pid is handed out again, a host name shared
WORKER_PROCESS_ATTR = "tradeoff_search:worker_process"
FINISHED_ATTR = "tradeoff_search:finished"  # when its worker told it, ISO 8601 in UTC (Optuna's times are naive local)

# ---------------------------------------------------------------------- training curves
CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
VAL_ACCURACY = "val_accuracy"

# ---------------------------------------------------------------------- constraints
LATENCY_CONSTRAINT = "latency_ms_over_budget"  # latency_ms minus the budget (feasible when <= 0)
RAM_CONSTRAINT = "ram_kb_over_budget"  # RAM in kB (1024 bytes) minus the budget
FLASH_CONSTRAINT = "flash_kb_over_budget"  # the .tflite's kB minus the budget

# ---------------------------------------------------------------------- study user attributes
SPEC = "spec"  # the resolved spec it runs under, without what runs pass (n_trials, timeout)
# The Optuna storage vouches for the MLflow record (anyone who can write to an MLflow server can
# add runs with any tags):
STUDY_UID_ATTR = "study_uid"  # this Optuna study's identity, made when it is created
PARENT_RUN_ATTR = "mlflow_parent_run"  # the id of its MLflow parent run
BUILDERS_ATTR = "builders"  # the study's record of its user builders (target, source path, sha256)
CALIBRATION_ATTR = "latency_calibration"  # the drift reference model's latency, primary batch size
RETIMED_ATTR = "retimed_latency_ms"  # the front re-timed side by side: {trial number: latency_ms}
DATA_DIGEST_ATTR = "data_sha256"  # sha256 of the data file or image folder the study runs on (see Dataset.digest)
# A table's fitted encoding and scaling, as studies before #33 kept it, rewritten by every run
# (select reads it for their trials, which record no PREPROCESSING_FILE); a trial now records the
# digest of its own, and no run writes this any more.
PREPROCESSING_ATTR = "data_preprocessing"

# ---------------------------------------------------------------------- metric names
LATENCY_METRIC = "latency_ms"  # the latency objective
LATENCY_DISPLAY_METRIC = "latency_us"  # a run's latency in µs, to 4 significant digits (MLflow's runs table)
RETIMED_METRIC = "latency_retimed_ms"  # a front trial's re-timed latency (tables, MLflow)
PARAMS_METRIC = "params"  # N_PARAMS as an objective and an MLflow metric


def latency_at_batch(batch_size: int) -> str:
    """The trial user attribute of the calibrated latency at a further batch size."""
    return f"{LATENCY_METRIC}_batch{batch_size}"


def calibration_attr(batch_size: int, primary: int) -> str:
    """The study user attribute holding the latency calibration of ``batch_size``."""
    return CALIBRATION_ATTR if batch_size == primary else f"{CALIBRATION_ATTR}_batch{batch_size}"
