"""End-to-end in a browser: a finished study (conftest's ``tiny_cli_study``), shown by ``tradeoff_search ui``
(MLflow) and by a real ``optuna-dashboard`` over its Optuna storage, in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``);
skipped without them. Nothing is downloaded: the driver is given by path, Selenium Manager stays offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import FinishedStudy, free_port, stop_group, wait_until_served

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Kept as CI artifacts (mlruns/ is git-ignored).
SCREENSHOTS = Path(__file__).resolve().parent.parent / "mlruns" / "screenshots"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver",
    ),
]


@dataclasses.dataclass(frozen=True)
class Pages:
    """What ``tradeoff_search ui spec.toml`` printed and opened for the tiny study."""

    runs: str
    front_plot: str
    models: str | None
    opened: str
    folder: Path  # the study's
    study: optuna.Study


@pytest.fixture(scope="module")
def ui_pages(tiny_cli_study: FinishedStudy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    """Serve the tiny study with ``tradeoff_search ui spec.toml`` (``$BROWSER`` a script that records
    what it is asked to open), once for this module's tests."""
    folder, printed, tmp_path = tiny_cli_study.folder, tiny_cli_study.stdout, tmp_path_factory.mktemp("ui")
    hinted = re.findall(r"runs of 'tiny': (\S+)", printed)
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.sh"  # run by sh: a temp folder may be mounted noexec
    recorder.write_text(f'echo "$1" > {shlex.quote(str(opened))}\n', encoding="utf-8")
    port, log = free_port(), tmp_path / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tradeoff_search", "ui", "spec.toml", "--port", str(port)],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "BROWSER": f"sh {shlex.quote(str(recorder))} %s"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (opened.exists() and "opened in your browser" in log.read_text()):
            assert server.poll() is None, f"the UI exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the UI opened no page in 90 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        runs = re.search(r"runs of 'tiny': (\S+)", log.read_text())
        plot = re.search(r"its Pareto front plot: (\S+)", log.read_text())
        assert runs and plot, log.read_text()[-3000:]
        # `run` printed the same page, on the default port
        assert hinted == [runs[1].replace(f":{port}/", ":5000/")], printed[-2000:]
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/mlruns/optuna.db")
        models = re.search(r"its models: (\S+)", log.read_text())
        yield Pages(runs[1], plot[1], models and models[1], opened.read_text(encoding="utf-8").strip(), folder, study)
    finally:
        stop_group(server)


# Chromium makes its singleton socket at $TMPDIR/org.chromium.Chromium.XXXXXX/SingletonSocket and
# aborts ("Socket path too long") past a socket address's 107 bytes: under a long TMPDIR, as CI
# runners give, it gets a folder in /tmp.
_SOCKET_SUFFIX = "/org.chromium.Chromium.XXXXXX/SingletonSocket"


def _chromium_temp() -> str:
    folder = tempfile.mkdtemp(prefix="chromium-")
    if len(folder) + len(_SOCKET_SUFFIX) > 107:
        os.rmdir(folder)
        folder = tempfile.mkdtemp(prefix="chromium-", dir="/tmp")
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium at 1600 × 1000, once for this module's tests."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1600,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    temp = _chromium_temp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not reach for the network
        patch.setenv("TMPDIR", temp)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        page = {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", page)  # the page itself, as a window shows it
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(temp, ignore_errors=True)


def _shown(browser: webdriver.Chrome, url: str, screenshot: str, ready: Callable[[webdriver.Chrome], object]) -> None:
    """Open ``url``, wait until ``ready`` (the assertions after say what is missing), save a screenshot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(url)
        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, 60).until(ready)
    finally:
        browser.save_screenshot(str(SCREENSHOTS / screenshot))


def _rows(driver: webdriver.Chrome) -> list[str]:
    """The runs table's rows top to bottom by id: ``tag.pareto.true`` for the front's group, then
    ``tag.pareto.true.RUN_ID`` for each run in it, …, ``tag.pareto`` for "Additional runs"."""
    return driver.execute_script(
        "const rows = new Map();"
        "for (const row of document.querySelectorAll('[role=row][row-index]'))"
        "  rows.set(Number(row.getAttribute('row-index')), row.getAttribute('row-id'));"
        "return [...rows.keys()].sort((a, b) => a - b).map(index => rows.get(index));"
    )


def _cells(driver: webdriver.Chrome, column: str) -> dict[str, str]:
    """The text of ``column``'s cells by row id."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[role=gridcell][col-id=\"' + arguments[0] + '\"]')]"
        "  .map(cell => [cell.closest('[role=row]').getAttribute('row-id'), cell.innerText]));",
        column,
    )


def test_mlflow_ui_opens_on_the_front_with_the_model_training_sidebar(
    ui_pages: Pages, browser: webdriver.Chrome
) -> None:
    """The runs page `ui` opens: the front's group first and open, the other trials' group closed,
    the parent run below; the sidebar of model training; latencies in µs."""
    assert ui_pages.opened == ui_pages.runs
    latency = "metrics.`latency_us`"
    _shown(browser, ui_pages.runs, "mlflow_runs.png", lambda driver: any(_cells(driver, latency).values()))
    where = f"the runs table, as in {SCREENSHOTS / 'mlflow_runs.png'}"
    client = MlflowClient(f"sqlite:///{ui_pages.folder}/mlruns/mlflow.db")
    runs = {run.info.run_id: run for run in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])}
    rows = _rows(browser)
    groups = [row for row in rows if row.rpartition(".")[2] not in runs]
    assert groups[0] == "tag.pareto.true" and groups[-1] == "tag.pareto", where
    assert set(groups[1:-1]) <= {"tag.pareto.false"}, where  # the others' group, when some are off the front
    cells = _cells(browser, latency)
    shown = {runs[row.rpartition(".")[2]].info.run_name: cells.get(row) for row in rows if row not in groups}
    front = {f"trial-{t.number:04d}": t.values[1] for t in ui_pages.study.best_trials}
    assert shown.keys() == {*front, "tiny"}, where  # the front and the parent run; `false` closed
    for name, latency_ms in front.items():  # e.g. 0.6649 (µs), not 0.0006648999…
        assert shown[name] == f"{latency_ms * 1e3:.4g}", where
    sidebar = browser.find_element(By.TAG_NAME, "nav").text.split("\n")
    assert {"Runs", "Models", "Model registry"} <= set(sidebar) and "Judges" not in sidebar, sidebar


def _in_viewer(driver: webdriver.Chrome, script: str) -> Any:
    """``script``'s value in the page MLflow's artifact viewer shows (its frame); None before it has one."""
    driver.switch_to.default_content()
    frames = driver.find_elements(By.TAG_NAME, "iframe")
    if not frames:
        return None
    driver.switch_to.frame(frames[0])
    try:
        return driver.execute_script(script)
    finally:
        driver.switch_to.default_content()


def test_mlflow_ui_shows_the_front_to_explore(ui_pages: Pages, browser: webdriver.Chrome) -> None:
    """The front page `ui` prints: pareto_front.html in MLflow's artifact viewer, a point per
    completed trial (its number the point's data), a hover naming its trial; the PNG beside it."""
    assert ui_pages.front_plot.partition("?")[0].endswith("/artifacts/pareto_front.html")
    plotted = (
        "const plot = document.querySelector('.js-plotly-plot'); return plot && plot.data.flatMap(t => t.customdata);"
    )
    _shown(browser, ui_pages.front_plot, "mlflow_front.png", lambda driver: _in_viewer(driver, plotted))
    where = f"the front, as in {SCREENSHOTS / 'mlflow_front.png'}"
    completed = [t for t in ui_pages.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(_in_viewer(browser, plotted) or []) == [t.number for t in completed], where
    assert "pareto_front.png" in browser.find_element(By.TAG_NAME, "body").text, where  # the PNG stays

    browser.switch_to.frame(browser.find_element(By.TAG_NAME, "iframe"))
    try:  # the front plot's first point, hovered
        point = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer path.point")
        ActionChains(browser).move_to_element(point).perform()
        with contextlib.suppress(TimeoutException):
            WebDriverWait(browser, 10).until(lambda driver: "trial" in _hover_text(driver))
        hover = _hover_text(browser)
    finally:
        browser.switch_to.default_content()
    named = re.match(r"trial (\d+)", hover)
    assert named, f"hover text {hover!r}"
    trial = ui_pages.study.trials[int(named[1])]
    for said in (trial.params["family"], f"{trial.user_attrs['n_params']} params", "quantization none",
                 f"accuracy {trial.values[0]:.4g}", f"latency {trial.values[1] * 1e3:.4g} µs"):  # fmt: skip
        assert said in hover, f"{said!r} not in the hover text {hover!r}"


def _hover_text(driver: webdriver.Chrome) -> str:
    return driver.execute_script("return document.querySelector('.hoverlayer')?.textContent ?? ''")


def test_mlflow_models_view_lists_the_fronts_models(ui_pages: Pages, browser: webdriver.Chrome) -> None:
    """The models `ui` prints: MLflow 3's Models view of the experiment, a logged model per front
    trial (those of trials pushed off the front since are gone), named after its run, with the
    trial's metrics."""
    assert ui_pages.models is not None

    def names(driver: webdriver.Chrome) -> set[str]:
        return set(re.findall(r"\btrial-\d{4}\b", driver.find_element(By.TAG_NAME, "body").text))

    client = MlflowClient(f"sqlite:///{ui_pages.folder}/mlruns/mlflow.db")
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    logged = client.search_logged_models([experiment_id])
    expected = {model.name for model in logged}
    _shown(browser, ui_pages.models, "mlflow_models.png", lambda driver: names(driver) >= expected)
    where = f"the Models view, as in {SCREENSHOTS / 'mlflow_models.png'}"
    assert expected and names(browser) >= expected, where
    runs = {run.info.run_id: run for run in client.search_runs([experiment_id])}
    for model in logged:  # each the model of its trial's run, tagged as it is, with its metrics
        run = runs[model.source_run_id]
        assert model.name == run.info.run_name and model.tags["pareto"] == run.data.tags["pareto"], model
        assert {m.key: m.value for m in model.metrics}["accuracy"] == run.data.metrics["accuracy"]
    assert expected == {f"trial-{t.number:04d}" for t in ui_pages.study.best_trials}  # the front's, no other
    assert {"accuracy", "latency_us", "params"} <= _headers_scrolled(browser), where  # the metrics' columns


def _headers_scrolled(driver: webdriver.Chrome) -> set[str]:
    """The table's column headers, scrolled through from left to right (it draws those in view only)."""
    return set(driver.execute_async_script(
        "const done = arguments[arguments.length - 1], seen = new Set();"
        "const viewport = document.querySelector('.ag-body-horizontal-scroll-viewport');"
        "const step = () => {"
        "  document.querySelectorAll('[role=columnheader]').forEach(cell => seen.add(cell.innerText));"
        "  if (!viewport || viewport.scrollLeft + viewport.clientWidth >= viewport.scrollWidth) return done([...seen]);"
        "  viewport.scrollLeft += viewport.clientWidth; setTimeout(step, 300);"
        "};"
        "step();"
    ))  # fmt: skip


@pytest.fixture
def dashboard(tiny_cli_study: FinishedStudy, tmp_path: Path) -> Iterator[str]:
    """A real optuna-dashboard (the ``[dashboard]`` extra) on the tiny study's storage; yields its URL."""
    pytest.importorskip("optuna_dashboard", reason='needs pip install -e ".[dashboard]"')
    folder = tiny_cli_study.folder
    port, log = free_port(), tmp_path / "dashboard.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", "from optuna_dashboard._cli import main; main()",  # `optuna-dashboard`
             "sqlite:///mlruns/optuna.db", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(server, log, f"{url}/api/studies", "optuna-dashboard", seconds=60)
        yield url
    finally:
        stop_group(server)


def test_optuna_dashboard_shows_named_metrics_the_front_and_user_attributes(
    dashboard: str, browser: webdriver.Chrome
) -> None:
    def text(driver: webdriver.Chrome) -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    def front_points(driver: webdriver.Chrome) -> int:  # the study page's first plot is the Pareto front
        return driver.execute_script(
            "const plot = document.querySelector('.js-plotly-plot');"
            "return plot ? plot.querySelectorAll('.scatterlayer path.point').length : 0;"
        )

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(f"{dashboard}/dashboard/studies/1")
        with contextlib.suppress(TimeoutException):
            wait.until(lambda driver: front_points(driver) >= 3)
    finally:
        browser.save_screenshot(str(SCREENSHOTS / "optuna_dashboard_front.png"))
    assert "Pareto Front" in text(browser) and front_points(browser) == 3  # the 3 trials, named axes:
    assert {"accuracy", "latency_ms"} <= set(text(browser).split())

    try:
        browser.get(f"{dashboard}/dashboard/studies/1/trials")
        with contextlib.suppress(TimeoutException):
            wait.until(lambda driver: "User Attributes" in text(driver))
    finally:
        browser.save_screenshot(str(SCREENSHOTS / "optuna_dashboard_trial.png"))
    shown = text(browser)
    for attribute in ("n_params", "macs", "model_bytes", "train_seconds", "latency {", "history {"):
        assert attribute in shown, f"user attribute {attribute!r}, as in {SCREENSHOTS / 'optuna_dashboard_trial.png'}"
