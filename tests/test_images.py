"""``images:FOLDER``: real PNG files written by the shipped script, read into (rows, height, width,
channels) arrays with labels from folder names; bad folders and files named in one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from tradeoff_search import SpecError, StudySpec, TradeoffObjective, load_dataset
from tradeoff_search.data import _images

from .conftest import EPS, REPO, png_header

PER_CLASS = 8


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sklearn's digits as PNG files, written by ``studies/make_digits_images.py`` (8 per class)."""
    out = tmp_path_factory.mktemp("digits") / "images"
    done = subprocess.run(
        [sys.executable, str(REPO / "studies" / "make_digits_images.py"), "--out", str(out), "--per-class", "8"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _spec(write_spec: Callable[..., Path], folder: Path, extra: str = "") -> StudySpec:
    return StudySpec.load(write_spec(f'[data]\nsource = "images:{folder}"\nscaling = "none"\n{extra}\n'))


def test_folders_of_pngs_are_images_labelled_by_folder(write_spec, digit_pngs: Path) -> None:
    data = load_dataset(_spec(write_spec, digit_pngs, 'color_mode = "grayscale"'))
    assert data.input_shape == (8, 8, 1) and data.n_classes == 10
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 10 * PER_CLASS
    # The pixels are the files' (scaling = "none"): every test image is one of class 3's files or another's.
    files = {p: np.asarray(Image.open(p), dtype=np.float32)[..., None] for p in digit_pngs.rglob("*.png")}
    for image, label in zip(data.x_test, data.y_test, strict=True):
        sources = [p for p, pixels in files.items() if np.array_equal(pixels, image)]
        assert sources and all(p.parent.name == str(label) for p in sources)  # digit folders sort as codes
    rgb = load_dataset(_spec(write_spec, digit_pngs, "image_size = [4, 6]"))
    assert rgb.input_shape == (4, 6, 3)  # Keras' default colour mode, resized to [height, width]


def test_a_cnn2d_trial_trains_on_image_files(write_spec, digit_pngs: Path) -> None:
    spec = StudySpec.load(write_spec(f"""
        [data]
        source = "images:{digit_pngs}"
        color_mode = "grayscale"
        [latency]
        max_seconds = 0.2
        [model]
        families = ["cnn2d"]
        conv_blocks = 1
        filters = [4, 8]
        [training]
        batch_size = 16
        max_epochs = 1
        [tracking]
        log_models = "none"
    """))  # fmt: skip
    objective = TradeoffObjective(spec)
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.params["family"] == "cnn2d" and 0 <= trial.values[0] <= 1


def _copy(digit_pngs: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    shutil.copytree(digit_pngs, folder)
    return folder


@pytest.mark.parametrize(
    ("damage", "key", "expected"),
    [
        (lambda f: (f / "3" / "0002.png").write_bytes(b"not a png"), "data.source", r"3/0002\.png is not"),
        (lambda f: Image.new("L", (9, 8)).save(f / "5" / "0100.png"), "data.image_size",
         r"5/0100\.png is 8×9, \S+/0/0000\.png is 8×8"),
        (lambda f: [p.unlink() for p in (f / "7").iterdir()], "data.source", r"images in every class folder \(\S+/7 "),
        (lambda f: [shutil.rmtree(f / str(d)) for d in range(1, 10)], "data.source", r"at least 2 \(\S+ has 1\)"),
        (lambda f: shutil.copy(f / "0" / "0000.png", f / "stray.png"), "data.source", r"stray\.png is not in one"),
    ],
    ids=["unreadable", "mixed_sizes", "empty_class", "one_class", "stray_file"],
)  # fmt: skip
def test_bad_folders_and_files_are_named(write_spec, digit_pngs: Path, tmp_path: Path, damage, key, expected) -> None:
    folder = _copy(digit_pngs, tmp_path)
    damage(folder)
    with pytest.raises(SpecError, match=expected) as caught:
        load_dataset(_spec(write_spec, folder))
    assert caught.value.key == key and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ('source = "images:missing"', "data.source", r"a folder of images \(\S+missing not found\)"),
        ('source = "sklearn:digits"\nimage_size = [8, 8]', "data.image_size", "only images: sources"),
        ('source = "images:."\nimage_size = [8, 8, 1]', "data.image_size", r"\[height, width\]"),
        ('source = "sklearn:digits"\ncolor_mode = "grayscale"', "data.color_mode", "only images: sources"),
    ],
)
def test_bad_image_specs(write_spec, data: str, key: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected) as caught:
        StudySpec.load(write_spec(f"[data]\n{data}\n"))
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (png_header(8000, 7000), r"at most 50 megapixels \(\S+/4/0001\.png is 8000×7000, 56 megapixels\)"),
        (png_header(10000, 10000), r"at most 50 megapixels \(\S+/4/0001\.png: Image size \(100000000 pixels\)"),
        (png_header(20000, 20000), r"at most 50 megapixels \(\S+/4/0001\.png: Image size \(400000000 pixels\)"),
        (EPS, r"readable BMP, GIF, JPEG, PNG images \(\S+/4/0001\.png is not: cannot identify"),
    ],
    ids=["over_our_limit", "pillow_warns", "pillow_refuses", "eps_named_png"],
)
def test_hostile_image_files_are_refused_before_decoding(
    write_spec, digit_pngs: Path, tmp_path: Path, content: bytes, expected: str
) -> None:
    folder = _copy(digit_pngs, tmp_path)
    (folder / "4" / "0001.png").write_bytes(content)
    if content == EPS:  # what Pillow would make of it unrestricted: an EPS, rendered by Ghostscript
        with Image.open(folder / "4" / "0001.png") as image:
            assert image.format == "EPS"
    with pytest.raises(SpecError, match=expected) as caught:
        load_dataset(_spec(write_spec, folder))
    assert caught.value.key == "data.source" and "\n" not in str(caught.value)


def test_a_folder_over_the_memory_limit_is_refused_naming_the_file(
    write_spec, digit_pngs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_images, "MAX_BYTES", 20 * 8 * 8 * 4)  # 20 of the 8×8 grayscale images as float32
    with pytest.raises(
        SpecError, match=r"images of at most \S+ GB in all as float32 arrays \(those up to \S+/2/0004\.png"
    ):
        load_dataset(_spec(write_spec, digit_pngs, 'color_mode = "grayscale"'))


def test_the_digest_is_of_the_file_list_and_contents(write_spec, digit_pngs: Path, tmp_path: Path) -> None:
    folder = _copy(digit_pngs, tmp_path)
    first = load_dataset(_spec(write_spec, folder)).digest
    assert first is not None and load_dataset(_spec(write_spec, folder)).digest == first
    (folder / "3" / "0002.png").rename(folder / "3" / "0002b.png")  # the same images, one renamed
    renamed = load_dataset(_spec(write_spec, folder)).digest
    shutil.copy(folder / "3" / "0003.png", folder / "3" / "0002b.png")  # one image's content
    assert len({first, renamed, load_dataset(_spec(write_spec, folder)).digest}) == 3


def test_a_study_refuses_a_changed_image_folder_unless_accepted(write_spec, digit_pngs: Path, tmp_path: Path) -> None:
    from tradeoff_search.study._open import open_study

    folder = _copy(digit_pngs, tmp_path)
    spec, storage = _spec(write_spec, folder, 'color_mode = "grayscale"'), f"sqlite:///{tmp_path}/optuna.db"
    recorded = open_study(spec, storage, data=load_dataset(spec)).user_attrs["data_sha256"]
    (folder / "3" / "0002.png").unlink()  # one image fewer
    changed = load_dataset(spec)
    with pytest.raises(SpecError, match=rf"changed: sha256 {recorded[:12]} then, {changed.digest[:12]} now\); restore"):
        open_study(spec, storage, data=changed)
    assert open_study(spec, storage, create=False).user_attrs["data_sha256"] == recorded  # nothing written
    assert open_study(spec, storage, data=changed, accept_data_change=True).user_attrs["data_sha256"] == changed.digest
