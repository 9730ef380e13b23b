"""End-to-end in a browser: a finished study (conftest's ``tiny_cli_study``), shown by ``tradeoff_search ui``
(MLflow) and by a real ``optuna-dashboard`` over its Optuna storage, in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``);
skipped without them. Nothing is downloaded: the driver is given by path, Selenium Manager stays offline.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import FinishedStudy, free_port, stop_group, wait_until_served

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RUN_NAMES = {"tiny", "trial-0000", "trial-0001", "trial-0002"}  # the parent run and its nested trial runs
# Kept as CI artifacts (mlruns/ is git-ignored).
SCREENSHOTS = Path(__file__).resolve().parent.parent / "mlruns" / "screenshots"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver",
    ),
]


@pytest.fixture
def ui_pages(tiny_cli_study: FinishedStudy, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Serve the tiny study with ``tradeoff_search ui spec.toml`` (``$BROWSER`` a script that records
    what it is asked to open) and yield the runs page, the front plot page and the page the UI opened."""
    folder, printed = tiny_cli_study.folder, tiny_cli_study.stdout
    hinted = re.findall(r"runs of 'tiny': (\S+)", printed)
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.sh"
    recorder.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    recorder.chmod(0o755)
    port, log = free_port(), tmp_path / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tradeoff_search", "ui", "spec.toml", "--port", str(port)],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "BROWSER": str(recorder)},
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
        yield runs[1], plot[1], opened.read_text().strip()
    finally:
        stop_group(server)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_mlflow_ui_opens_on_the_runs_the_pareto_column_and_the_front_plot(
    ui_pages: tuple[str, str, str], browser: webdriver.Chrome
) -> None:
    runs_page, plot_page, opened = ui_pages
    assert opened == runs_page

    def listed(driver: webdriver.Chrome) -> set[str]:
        return {link.text for link in driver.find_elements(By.CSS_SELECTOR, "[role=gridcell] a[href*='/runs/']")}

    def headers(driver: webdriver.Chrome) -> set[str]:
        return {cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "[role=columnheader]")}

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)
    try:  # no click: the view groups the runs by `pareto`, every group open
        browser.get(runs_page)
        with contextlib.suppress(TimeoutException):  # the assertions below say what is missing
            wait.until(lambda driver: listed(driver) >= RUN_NAMES and "pareto" in headers(driver))
    finally:
        browser.save_screenshot(str(SCREENSHOTS / "mlflow_runs.png"))
    assert listed(browser) == RUN_NAMES, f"the runs table, as in {SCREENSHOTS / 'mlflow_runs.png'}"
    assert {"accuracy", "latency_ms", "pareto", "pareto_rank"} <= headers(browser)

    def plots(driver: webdriver.Chrome) -> int:  # images shown and loaded at a plot's size (icons are small)
        return driver.execute_script(
            "return [...document.images].filter(i => i.offsetParent && i.naturalWidth >= 300).length"
        )

    try:
        browser.get(plot_page)
        with contextlib.suppress(TimeoutException):
            wait.until(lambda driver: plots(driver) > 0)
    finally:
        browser.save_screenshot(str(SCREENSHOTS / "mlflow_front_plot.png"))
    assert "pareto_front.png" in browser.find_element(By.TAG_NAME, "body").text
    assert plots(browser) == 1, f"no front plot, as in {SCREENSHOTS / 'mlflow_front_plot.png'}"


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
