"""A corpus of bad inputs, each run through the real command line.

Every case must exit with code 2 and print exactly one stderr line ``error: SOURCE: KEY = VALUE:
expected ...`` naming the file (or flag), the key and the offending value, with no traceback, and
must leave nothing behind: no ``mlruns/``, no SQLite file, nothing new in the working directory.
Bad inputs must also fail before TensorFlow is imported (no model is built or trained).

Most cases call ``main`` in-process (fast); a few run as a real ``python -m tradeoff_search``
process to prove the process exit code and what a user's terminal shows.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tradeoff_search.cli._cli import main

from .conftest import png_header

DIR = object()  # a file-table value: make a directory of that name
IRIS = '[data]\nsource = "sklearn:iris"\n'
CSV_SPEC = '[data]\nsource = "csv:d.csv"\ntarget = "y"\n'
NPZ_SPEC = '[data]\nsource = "npz:d.npz"\n'
GOOD_CSV = "a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40))
POSTGRES = "postgresql+psycopg://user:secret@127.0.0.1:9/db"
UNREACHABLE = "http://127.0.0.1:9"


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """One bad input: files to write, the argv, and what the single error line must say.

    ``{tmp}`` in ``argv`` and ``value`` is replaced by the test's temp dir. ``value`` is the value
    exactly as the message shows it (JSON), so the line must start with
    ``error: {source}: {key} = {value}``. ``usage`` marks flags that argparse refuses: their one
    line names the command, the flag and the value.
    """

    id: str
    argv: tuple[str, ...]
    source: str
    key: str
    value: str
    files: dict[str, object] = field(default_factory=dict)
    hint: str | None = None  # another fragment the line must contain
    secret: str | None = None  # must appear nowhere in stdout or stderr
    usage: bool = False


def spec_case(id: str, text: str | bytes, key: str, value: str, *, hint: str | None = None, **files: object) -> Case:
    """``run bad.toml`` with ``text`` as the spec (and ``files`` next to it)."""
    return Case(id, ("run", "bad.toml"), "bad.toml", key, value, {"bad.toml": text, **files}, hint)


def csv_case(id: str, csv: str, key: str, value: str, hint: str) -> Case:
    return spec_case(id, CSV_SPEC, key, value, hint=hint, **{"d.csv": csv})


def npz_case(id: str, npz: bytes | str, hint: str) -> Case:
    return spec_case(id, NPZ_SPEC, "data.source", '"npz:d.npz"', hint=hint, **{"d.npz": npz})


def usage_case(id: str, command: str, flag: str, value: str, hint: str) -> Case:
    """``COMMAND spec.toml FLAG VALUE`` with a valid spec: a flag value argparse refuses."""
    return Case(id, (command, "spec.toml", flag, value), flag, "", value, {"spec.toml": IRIS}, hint=hint, usage=True)


def flag_case(id: str, *argv: str, source: str, key: str, value: str, **kwargs: object) -> Case:
    """A valid spec ``spec.toml`` with a bad ``--storage``/``--tracking-uri``."""
    return Case(id, argv, source, key, value, {"spec.toml": IRIS}, **kwargs)  # type: ignore[arg-type]


def _damaged(npz: bytes) -> bytes:
    """Flip bytes inside the archive's stored data: its CRC no longer matches."""
    middle = len(npz) // 3
    return npz[:middle] + bytes(b ^ 0xFF for b in npz[middle : middle + 16]) + npz[middle + 16 :]


def _png(size: tuple[int, int] = (2, 2)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, "PNG")
    return buffer.getvalue()


def _zip_with_text_member() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", "not an array")
        archive.writestr("y.npy", "nor this")
    return buffer.getvalue()


RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
Y = np.arange(40) % 2

CASES = [
    # ------------------------------------------------------------------ the spec file itself
    spec_case("toml_malformed", "[data\nsource = 1\n", "(file)", '"bad.toml"', hint="valid TOML"),
    spec_case(
        "toml_duplicate_key",
        IRIS + 'source = "sklearn:wine"\n',
        "(file)",
        '"bad.toml"',
        hint="valid TOML",
    ),
    spec_case("toml_not_utf8", IRIS.encode() + b"# caf\xe9\n", "(file)", '"bad.toml"', hint="utf-8"),
    Case(
        "spec_missing",
        ("run", "nowhere.toml"),
        "nowhere.toml",
        "(file)",
        '"nowhere.toml"',
        hint="No such file",
    ),
    spec_case("spec_is_a_directory", DIR, "(file)", '"bad.toml"', hint="readable TOML file"),
    # ------------------------------------------------------------------ sections and keys
    spec_case("section_unknown", IRIS + "[search]\nx = 1\n", "search", '{"x": 1}', hint="one of the sections"),
    spec_case("section_not_a_table", "model = 3\n" + IRIS, "model", "3", hint="a table"),
    spec_case("section_data_missing", '[study]\nname = "x"\n', "data", "null", hint="required"),
    spec_case("key_unknown", IRIS + "[model]\nlayers = 2\n", "model.layers", "2", hint="one of the keys"),
    spec_case("key_data_source_missing", '[data]\ntarget = "y"\n', "data.source", "null", hint="required"),
    # ------------------------------------------------------------------ names are data, not paths
    spec_case(
        "study_name_parent_dir", '[study]\nname = "../../x"\n' + IRIS, "study.name", '"../../x"', hint="without /"
    ),
    spec_case("study_name_absolute", '[study]\nname = "/tmp/x"\n' + IRIS, "study.name", '"/tmp/x"', hint="without /"),
    spec_case("study_name_dot_dot", '[study]\nname = ".."\n' + IRIS, "study.name", '".."', hint="not . or .."),
    spec_case("study_name_colon", '[study]\nname = "a:b"\n' + IRIS, "study.name", '"a:b"', hint="without /, :"),
    spec_case("study_name_newline", '[study]\nname = "a\\nb"\n' + IRIS, "study.name", '"a\\nb"', hint="control"),
    # Unicode control and format characters: a bidi override makes "evil\u202egnp.exe" read otherwise
    spec_case("study_name_bidi_override", '[study]\nname = "a\\u202Eb"\n' + IRIS, "study.name", '"a\\u202eb"'),
    spec_case("study_name_zero_width", '[study]\nname = "a\\u200Bb"\n' + IRIS, "study.name", '"a\\u200bb"'),
    spec_case("study_name_c1_control", '[study]\nname = "a\\u0085b"\n' + IRIS, "study.name", '"a\\u0085b"'),
    # ------------------------------------------------------------------ bounds: no typo asks for terabytes
    spec_case(
        "units_huge",
        IRIS + "[model]\nunits = [1000000, 1000000]\n",
        "model.units",
        "[1000000, 1000000]",
        hint="in [1, 65536]",
    ),
    spec_case(
        "space_over_memory",
        IRIS + "[model]\nunits = [16, 65536]\nn_layers = 3\n",
        "model.units",
        "[16, 65536]",
        hint="~8.59e+09 parameters and needs ~128 GB to train at batch 128, over the 4 GB",
    ),
    spec_case(
        "max_seconds_huge",
        IRIS + "[latency]\nmax_seconds = 1e9\n",
        "latency.max_seconds",
        "1000000000.0",
        hint="(0, 600]",
    ),
    spec_case(
        "conversion_timeout_under_a_second",
        IRIS + "[latency]\nconversion_timeout = 0.5\n",
        "latency.conversion_timeout",
        "0.5",
        hint="[1, 86400]",
    ),
    # ------------------------------------------------------------------ wrong types
    spec_case("type_string_for_int", IRIS + '[study]\nn_trials = "10"\n', "study.n_trials", '"10"'),
    spec_case("type_bool_for_int", IRIS + "[training]\nmax_epochs = true\n", "training.max_epochs", "true"),
    spec_case("type_float_for_int", IRIS + "[training]\npatience = 2.5\n", "training.patience", "2.5"),
    spec_case("type_list_for_scalar", IRIS + "[study]\nseed = [1, 2]\n", "study.seed", "[1, 2]"),
    spec_case("type_float_in_int_range", IRIS + "[model]\nn_layers = [1.5, 3]\n", "model.n_layers", "[1.5, 3]"),
    spec_case("type_string_for_bool", IRIS + '[model]\nbatch_norm = ["yes"]\n', "model.batch_norm", '["yes"]'),
    spec_case("type_nan", IRIS + "[latency]\nmax_seconds = nan\n", "latency.max_seconds", "NaN"),
    # ------------------------------------------------------------------ ranges and choices
    spec_case("range_inverted", IRIS + "[model]\nunits = [256, 8]\n", "model.units", "[256, 8]", hint="low <= high"),
    spec_case("range_three_items", IRIS + "[model]\nunits = [8, 16, 32]\n", "model.units", "[8, 16, 32]"),
    spec_case("choice_empty", IRIS + "[model]\nactivation = []\n", "model.activation", "[]", hint="non-empty"),
    spec_case(
        "choice_duplicate",
        IRIS + "[training]\nbatch_size = [32, 32]\n",
        "training.batch_size",
        "[32, 32]",
        hint="without repeats",
    ),
    spec_case(
        "learning_rate_negative",
        IRIS + "[optimizer]\nlearning_rate = -0.001\n",
        "optimizer.learning_rate",
        "-0.001",
    ),
    spec_case(
        "learning_rate_zero",
        IRIS + "[optimizer]\nlearning_rate = [0.0, 0.01]\n",
        "optimizer.learning_rate",
        "[0.0, 0.01]",
    ),
    spec_case("dropout_one", IRIS + "[model]\ndropout = 1.0\n", "model.dropout", "1.0"),
    spec_case("dropout_above_one", IRIS + "[model]\ndropout = [0.1, 1.5]\n", "model.dropout", "[0.1, 1.5]"),
    spec_case("n_layers_zero", IRIS + "[model]\nn_layers = 0\n", "model.n_layers", "0"),
    spec_case("n_trials_zero", IRIS + "[study]\nn_trials = 0\n", "study.n_trials", "0"),
    spec_case("timeout_zero", IRIS + "[study]\ntimeout = 0\n", "study.timeout", "0"),
    spec_case(
        "optimizer_unknown",
        IRIS + '[optimizer]\nname = ["adam", "lion"]\n',
        "optimizer.name",
        '["adam", "lion"]',
        hint='"lion"',
    ),
    spec_case("activation_unknown", IRIS + '[model]\nactivation = "mish"\n', "model.activation", '"mish"'),
    spec_case("sampler_unknown", IRIS + '[study]\nsampler = "cmaes"\n', "study.sampler", '"cmaes"'),
    spec_case("objective_unknown", IRIS + '[objectives]\naccuracy = "f1"\n', "objectives.accuracy", '"f1"'),
    spec_case("log_models_unknown", IRIS + '[tracking]\nlog_models = "best"\n', "tracking.log_models", '"best"'),
    spec_case(
        "hypervolume_reference_three_numbers",
        IRIS + "[tracking]\nhypervolume_reference = [0.0, 10.0, 1.0]\n",
        "tracking.hypervolume_reference",
        "[0.0, 10.0, 1.0]",
        hint="one number for each of ['accuracy', 'latency_ms']",
    ),
    spec_case("latency_runtime_onnx", IRIS + '[latency]\nruntime = "onnx"\n', "latency.runtime", '"onnx"'),
    spec_case("latency_budget_zero", IRIS + "[latency]\nbudget_ms = 0\n", "latency.budget_ms", "0"),
    spec_case("seed_negative", IRIS + "[study]\nseed = -1\n", "study.seed", "-1", hint="[0, 2147483647]"),
    spec_case("seed_too_large", IRIS + "[study]\nseed = 99999999999999999\n", "study.seed", "99999999999999999"),
    spec_case("split_seed_negative", IRIS + "split_seed = -1\n", "data.split_seed", "-1"),
    spec_case(
        "threads_huge", IRIS + "[latency]\nthreads = 99999999999999999\n", "latency.threads", "99999999999999999"
    ),
    spec_case(
        "heartbeat_huge",
        IRIS + "[study]\nheartbeat_seconds = 99999999999999999\n",
        "study.heartbeat_seconds",
        "99999999999999999",
    ),
    spec_case(
        "input_shape_product_wraps_in_int64",  # 2**58 + 1 times 64 is 64 modulo 2**64
        '[data]\nsource = "sklearn:digits"\ninput_shape = [288230376151711745, 64]\n',
        "data.input_shape",
        "[288230376151711745, 64]",
        hint="a shape of 64 features",
    ),
    spec_case(
        "validation_fraction_holds_out_no_row",
        IRIS + "validation_fraction = 1e-9\n",
        "data.validation_fraction",
        "1e-09",
        hint="at least one row of each of the 3 classes",
    ),
    # ------------------------------------------------------------------ [data]
    spec_case(
        "fractions_sum_to_one",
        IRIS + "validation_fraction = 0.5\ntest_fraction = 0.5\n",
        "data.validation_fraction",
        "0.5",
        hint="test_fraction = 0.5",
    ),
    spec_case("fraction_zero", IRIS + "test_fraction = 0.0\n", "data.test_fraction", "0.0"),
    spec_case("sklearn_dataset_unknown", '[data]\nsource = "sklearn:mnist"\n', "data.source", '"sklearn:mnist"'),
    spec_case("source_scheme_unknown", '[data]\nsource = "hf:mnist"\n', "data.source", '"hf:mnist"'),
    spec_case("source_without_location", '[data]\nsource = "csv:"\ntarget = "y"\n', "data.source", '"csv:"'),
    spec_case("target_with_sklearn_source", IRIS + 'target = "y"\n', "data.target", '"y"', hint="only csv: sources"),
    spec_case("csv_target_not_given", '[data]\nsource = "csv:d.csv"\n', "data.target", "null", **{"d.csv": GOOD_CSV}),
    spec_case("csv_missing", '[data]\nsource = "csv:x.csv"\ntarget = "y"\n', "data.source", '"csv:x.csv"'),
    spec_case(
        "csv_is_a_directory",
        '[data]\nsource = "csv:x.csv"\ntarget = "y"\n',
        "data.source",
        '"csv:x.csv"',
        **{"x.csv": DIR},
    ),
    csv_case("csv_empty", "", "data.source", '"csv:d.csv"', hint="readable CSV"),
    csv_case("csv_target_absent", "a,b,label\n" + "1,2,0\n3,4,1\n" * 10, "data.target", '"y"', hint="a column of"),
    # The header is the file's first line: only a short part of it is quoted.
    replace(
        csv_case(
            "csv_header_echo",
            "a," + "x" * 40 + "SECRET,label\n" + "1,2,0\n3,4,1\n" * 10,
            "data.target",
            '"y"',
            hint="a column of d.csv (a, xxxxx",
        ),
        secret="SECRET",
    ),
    csv_case("csv_no_feature_column", "y\n" + "0\n1\n" * 10, "data.source", '"csv:d.csv"', hint="feature column"),
    csv_case("csv_nan_feature", "a,y\n1,0\n,1\n" + "3,0\n4,1\n" * 10, "data.missing", '"error"', hint="'a'"),
    csv_case(
        "csv_numbers_but_a_marker",  # UCI tables write ? for a missing value
        "a,b,y\n" + "".join(f"{i},{'?' if i in (3, 17) else i % 7},{i % 2}\n" for i in range(40)),
        "data.missing_values",
        "[]",
        hint="""missing_values = ["?"] if they mark missing values, or text_columns = ["b"] (column 'b' of d.csv \
holds numbers but for "?" in rows 5, 19: 2 of 40 values)""",
    ),
    csv_case("csv_nan_label", "a,y\n1,0\n2,\n" + "3,0\n4,1\n" * 10, "data.target", '"y"', hint="missing labels"),
    csv_case("csv_single_class", "a,y\n" + "1,0\n" * 20, "data.source", '"csv:d.csv"', hint="at least 2 classes"),
    csv_case("csv_too_few_rows", "a,y\n1,0\n2,1\n3,0\n", "data.source", '"csv:d.csv"', hint="enough rows"),
    npz_case("npz_pickled_objects", _npz(x=np.array([{"a": 1}] * 40, dtype=object), y=Y), "allow_pickle"),
    npz_case("npz_missing_y", _npz(x=X), "'y'"),
    npz_case("npz_not_an_npz", "hello\n", "NumPy .npz archive (this file is not one)"),
    npz_case("npz_nan_feature", _npz(x=np.where(X > 1, np.nan, X), y=Y), "finite"),
    npz_case("npz_length_mismatch", _npz(x=X, y=Y[:30]), "as many labels as rows"),
    npz_case("npz_scalars", _npz(x=np.array(5.0), y=np.array(1)), "'x' of shape (rows, features...)"),
    npz_case("npz_no_feature", _npz(x=np.zeros((40, 0)), y=Y), "found (40, 0)"),
    npz_case("npz_one_dimensional_x", _npz(x=X[:, 0], y=Y), "found (40,)"),
    npz_case("npz_one_hot_y", _npz(x=X, y=np.eye(2)[Y]), "'y' of one label per row"),
    npz_case("npz_nan_label", _npz(x=X, y=np.where(Y > 0, np.nan, 0.0)), "without NaN"),
    npz_case("npz_complex_x", _npz(x=X + 1j, y=Y), "real numeric"),
    npz_case("npz_damaged_member", _damaged(_npz(x=X, y=Y)), "plain arrays"),
    npz_case("npz_text_member", _zip_with_text_member(), "saved by numpy.savez"),
    csv_case("csv_inf_feature", "a,y\n1,0\ninf,1\n" + "3,0\n4,1\n" * 10, "data.source", '"csv:d.csv"', hint="has inf"),
    csv_case("csv_not_text", "\x00\x01,\n\x02\n" * 3 + "a,b\n1,2,3\n", "data.source", '"csv:d.csv"', hint="CSV"),
    spec_case(
        "csv_overflows_scaling",
        CSV_SPEC,
        "data.scaling",
        '"standard"',
        hint="without overflow",
        **{"d.csv": "a,y\n" + "".join(f"{(-1) ** i * 1e308},{i % 2}\n" for i in range(40))},
    ),
    spec_case(
        "images_decompression_bomb",
        '[data]\nsource = "images:imgs"\n',
        "data.source",
        '"images:imgs"',
        hint="images of at most 50 megapixels (imgs/b/0.png: Image size (400000000 pixels)",
        **{"imgs/a/0.png": _png(), "imgs/b/0.png": png_header(20000, 20000)},
    ),
    # ------------------------------------------------------------------ flags (argparse owns the format)
    usage_case("flag_n_trials_zero", "run", "--n-trials", "0", "--n-trials"),
    usage_case("flag_n_trials_text", "run", "--n-trials", "ten", "ten"),
    usage_case("flag_workers_above_the_cores", "run", "--workers", "100000", "logical cores of this machine"),
    usage_case("flag_timeout_negative", "run", "--timeout", "-1", "--timeout"),
    usage_case("flag_select_mnas_nan", "select", "--mnas", "nan", "a number < 0"),
    usage_case("flag_select_mnas_positive", "select", "--mnas", "5", "a number < 0"),
    usage_case("flag_select_min_accuracy_above_one", "select", "--min-accuracy", "2", "an accuracy in (0, 1]"),
    usage_case("flag_select_target_ms_without_mnas", "select", "--target-ms", "1", "without --mnas"),
    # ------------------------------------------------------------------ stores
    flag_case(
        "storage_unreachable_postgres",
        *("run", "spec.toml", "--storage", POSTGRES, "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        source="--storage",
        key="storage",
        value='"postgresql+psycopg://user:***@127.0.0.1:9/db"',
        secret="secret",
    ),
    flag_case(
        "storage_sqlite_in_missing_folder",
        *("run", "spec.toml", "--storage", "sqlite:///{tmp}/missing/optuna.db"),
        *("--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        source="--storage",
        key="storage",
        value='"sqlite:///{tmp}/missing/optuna.db"',
    ),
    flag_case(
        "storage_not_a_url",
        *("run", "spec.toml", "--storage", "optuna.db", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        source="--storage",
        key="storage",
        value='"optuna.db"',
    ),
    flag_case(
        "tracking_uri_unreachable",
        *("run", "spec.toml", "--tracking-uri", UNREACHABLE, "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value=f'"{UNREACHABLE}"',
        hint="reachable MLflow server",
    ),
    flag_case(
        "tracking_uri_unreachable_with_password",
        *("run", "spec.toml", "--tracking-uri", "http://user:secret@127.0.0.1:9"),
        *("--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"http://user:***@127.0.0.1:9"',
        secret="secret",
    ),
    flag_case(
        "tracking_uri_plain_folder",
        *("run", "spec.toml", "--tracking-uri", "./mlruns"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"./mlruns"',
    ),
    flag_case(
        "tracking_uri_file_scheme",
        *("run", "spec.toml", "--tracking-uri", "file://{tmp}/store", "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"file://{tmp}/store"',
    ),
    flag_case(
        "tracking_uri_unknown_scheme",
        *("run", "spec.toml", "--tracking-uri", "foo://bar", "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"foo://bar"',
        hint="a URL of sqlite, postgresql",
    ),
    flag_case(
        "tracking_uri_sqlite_file_is_not_a_database",
        *("run", "spec.toml", "--tracking-uri", "sqlite:///{tmp}/spec.toml", "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"sqlite:///{tmp}/spec.toml"',
        hint="a SQLite database file",
    ),
    flag_case(
        "tracking_uri_unreachable_database",
        *("run", "spec.toml", "--tracking-uri", POSTGRES, "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"postgresql+psycopg://user:***@127.0.0.1:9/db"',
        hint="a reachable database",
        secret="secret",
    ),
    flag_case(
        "tracking_uri_unparseable",
        *("run", "spec.toml", "--tracking-uri", "http://[bad", "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"http://[bad"',
        hint="a valid URL",
    ),
    flag_case(
        "tracking_uri_port_not_a_number",
        *("run", "spec.toml", "--tracking-uri", "http://127.0.0.1:notaport", "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"http://127.0.0.1:notaport"',
        hint="a valid URL",
    ),
    flag_case(
        "storage_unparseable_with_password",
        *("run", "spec.toml", "--storage", "postgresql://user:secret@[bad/db"),
        *("--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        source="--storage",
        key="storage",
        value='"postgresql://user:***@[bad/db"',
        secret="secret",
    ),
    flag_case(
        "storage_password_as_a_query_parameter",
        *("run", "spec.toml", "--storage", "postgresql+psycopg://user@127.0.0.1:9/db?sslpassword=secret"),
        *("--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        source="--storage",
        key="storage",
        value='"postgresql+psycopg://user@127.0.0.1:9/db?sslpassword=***"',
        hint="a reachable database",
        secret="secret",
    ),
    flag_case(
        "tracking_uri_password_with_an_unescaped_at",
        *("run", "spec.toml", "--tracking-uri", "postgresql://user:se@cret@127.0.0.1:9/db"),
        *("--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"postgresql://user:***@127.0.0.1:9/db"',
        hint="writes @ as %40",
        secret="cret",
    ),
    flag_case(
        "storage_in_a_missing_subfolder_of_mlruns",
        *("run", "spec.toml", "--storage", "sqlite:///mlruns/sub/optuna.db"),
        source="--storage",
        key="storage",
        value='"sqlite:///mlruns/sub/optuna.db"',
        hint="mlruns/sub is missing",
    ),
    flag_case(
        "one_sqlite_file_for_both_stores",
        *("run", "spec.toml", "--storage", "sqlite:///one.db", "--tracking-uri", "sqlite:///{tmp}/one.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"sqlite:///{tmp}/one.db"',
        hint="a SQLite file other than the Optuna storage's",
    ),
    flag_case(
        "sync_one_sqlite_file_for_both_stores",
        *("sync", "spec.toml", "--storage", "sqlite:///{tmp}/one.db", "--tracking-uri", "sqlite:///{tmp}/one.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"sqlite:///{tmp}/one.db"',
        hint="a SQLite file other than the Optuna storage's",
    ),
    flag_case(
        "tracking_uri_sqlite_in_missing_folder",
        *("run", "spec.toml", "--tracking-uri", "sqlite:///{tmp}/missing/mlflow.db"),
        *("--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value='"sqlite:///{tmp}/missing/mlflow.db"',
    ),
    # ------------------------------------------------------------------ other commands
    Case(
        "pareto_bad_spec",
        ("pareto", "bad.toml", "--storage", "sqlite:///{tmp}/optuna.db"),
        "bad.toml",
        "model.layers",
        "2",
        {"bad.toml": IRIS + "[model]\nlayers = 2\n"},
    ),
    Case(
        "sync_bad_spec",
        ("sync", "bad.toml", "--storage", "sqlite:///{tmp}/optuna.db", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        "bad.toml",
        "study.sampler",
        '"cmaes"',
        {"bad.toml": IRIS + '[study]\nsampler = "cmaes"\n'},
    ),
    flag_case(
        "sync_tracking_uri_unreachable",
        *("sync", "spec.toml", "--tracking-uri", UNREACHABLE, "--storage", "sqlite:///{tmp}/optuna.db"),
        source="--tracking-uri",
        key="tracking_uri",
        value=f'"{UNREACHABLE}"',
    ),
    Case(
        "pareto_in_an_empty_database_file",  # opening it with Optuna would create its tables
        ("pareto", "spec.toml", "--storage", "sqlite:///{tmp}/empty.db"),
        "spec.toml",
        "study.name",
        '"spec"',
        {"spec.toml": IRIS, "empty.db": ""},
        hint="run it first",
    ),
    flag_case(
        "pareto_unknown_study",
        *("pareto", "spec.toml", "--storage", "sqlite:///{tmp}/optuna.db"),
        source="spec.toml",
        key="study.name",
        value='"spec"',
        hint="run it first",
    ),
    flag_case(
        "pareto_unknown_study_default_storage",
        *("pareto", "spec.toml"),
        source="spec.toml",
        key="study.name",
        value='"spec"',
        hint="run it first",
    ),
    flag_case(
        "sync_unknown_study",
        *("sync", "spec.toml", "--storage", "sqlite:///{tmp}/optuna.db", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        source="spec.toml",
        key="study.name",
        value='"spec"',
        hint="run it first",
    ),
]
BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"

SUBPROCESS_IDS = ["csv_nan_feature", "storage_unreachable_postgres", "tracking_uri_unreachable"]


def _write_files(root: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is DIR:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            assert isinstance(content, str)
            path.write_text(content, encoding="utf-8")


def _snapshot(root: Path) -> set[str]:
    """Every path under ``root`` with its size: a file written to shows too."""
    return {f"{p.relative_to(root)} {p.stat().st_size if p.is_file() else '/'}" for p in root.rglob("*")}


def _check(case: Case, tmp: Path, code: object, out: str, err: str, before: set[str]) -> None:
    """The required behaviour of every bad input."""
    shown = f"exit {code!r}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert "Traceback" not in out + err, shown
    assert code == 2, shown
    if case.secret is not None:
        assert case.secret not in out + err, shown
    # nothing written to either store, nor anywhere else in the working dir
    assert not (tmp / "mlruns").exists(), shown
    for store in ("optuna.db", "mlflow.db", "missing"):
        assert not (tmp / store).exists(), f"{store} was created\n{shown}"
    assert _snapshot(tmp) == before, f"new files: {sorted(_snapshot(tmp) - before)}\n{shown}"
    lines = err.splitlines()
    assert len(lines) == 1, shown
    assert out == "", shown  # not even a "data ..." line: inputs are checked before data is loaded
    if case.usage:  # a flag argparse refused: "error: PROG COMMAND: argument FLAG: ..."
        assert lines[0].startswith(f"error: tradeoff_search {case.argv[0]}: argument {case.source}"), shown
        assert case.value in lines[0] and case.hint in lines[0], shown
        return
    value = case.value.replace("{tmp}", str(tmp))
    assert lines[0].startswith(f"error: {case.source}: {case.key} = {value}: expected "), shown
    if case.hint is not None:
        assert case.hint in lines[0], shown


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_in_process(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _write_files(tmp_path, case.files)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    heavy_before = {"tensorflow", "keras"} & set(sys.modules)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    try:
        code: object = main(argv)
    except SystemExit as exit_:  # argparse errors exit through SystemExit(2)
        code = exit_.code
    out, err = capfd.readouterr()  # fd-level: also what C libraries print
    _check(case, tmp_path, code, out, err, before)
    # A bad input fails before any model is built: TensorFlow stays unimported (checkable only
    # when nothing earlier in this process imported it, e.g. when this file runs alone).
    if not heavy_before:
        assert not {"tensorflow", "keras"} & set(sys.modules), f"{case.id} imported TensorFlow"


@pytest.mark.parametrize("case_id", SUBPROCESS_IDS)
def test_bad_input_as_a_process(case_id: str, tmp_path: Path) -> None:
    case = BY_ID[case_id]
    _write_files(tmp_path, case.files)
    before = _snapshot(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    done = subprocess.run(
        [sys.executable, "-m", "tradeoff_search", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    _check(case, tmp_path, done.returncode, done.stdout, done.stderr, before)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_a_latency_lock_folder_that_cannot_be_made_is_one_line_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Trainings and timings take a lock in ``$XDG_RUNTIME_DIR`` or ``~/.cache``: a ``HOME`` that is
    no folder, or an ``XDG_RUNTIME_DIR`` under a file, is said before the stores, the data or the logs."""
    case = Case("lock_folder", ("run", "spec.toml"), "", "latency lock folder", "",
                {"spec.toml": '[data]\nsource = "sklearn:iris"\n', "not-a-folder": "a file\n"},
                hint="set XDG_RUNTIME_DIR to a folder of yours")  # fmt: skip
    _write_files(tmp_path, case.files)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    for variable, value in (("HOME", "not-a-folder"), ("XDG_RUNTIME_DIR", "not-a-folder/run")):
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        monkeypatch.setenv(variable, str(tmp_path / value))
        expected = str(tmp_path / value / (".cache/tradeoff_search" if variable == "HOME" else "tradeoff_search"))
        code = main(list(case.argv))
        out, err = capfd.readouterr()
        _check(replace(case, source=variable, value=json.dumps(expected)), tmp_path, code, out, err, before)
        assert "NotADirectoryError" in err, err
