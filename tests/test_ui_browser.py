"""End-to-end in a browser: a finished study, ``tradeoff_search ui``, and headless Chromium showing its runs.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``);
skipped without them. Nothing is downloaded: the driver is given by path, Selenium Manager stays offline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RUN_NAMES = {"tiny", "trial-0000", "trial-0001", "trial-0002"}  # the parent run and its nested trial runs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (the UI, mlflow, its uvicorn workers); wait 20 s for all of it, then SIGKILL."""
    deadline = time.monotonic() + 20
    with contextlib.suppress(ProcessLookupError):  # raised once no process of the group is left
        os.killpg(process.pid, signal.SIGTERM)
        while time.monotonic() < deadline:
            process.poll()  # reap our own child: a zombie would keep the group alive
            os.killpg(process.pid, 0)
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def ui_url(write_spec: Callable[..., Path], tmp_path: Path) -> Iterator[str]:
    """Run the tiny study, serve it with ``tradeoff_search ui`` and yield the UI's base URL."""
    write_spec()
    done = subprocess.run(
        [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    port, log = _free_port(), tmp_path / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tradeoff_search", "ui", "--port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"the UI exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the UI did not answer on {url} in 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(server)


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


def test_mlflow_ui_lists_the_study_run_and_its_trial_runs(
    ui_url: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    query = f"{ui_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny"
    with urllib.request.urlopen(query, timeout=10) as response:
        experiment_id = json.load(response)["experiment"]["experiment_id"]

    def listed(driver: webdriver.Chrome) -> set[str]:
        return {link.text for link in driver.find_elements(By.CSS_SELECTOR, "[role=gridcell] a[href*='/runs/']")}

    screenshot = tmp_path / "mlflow_ui.png"
    wait = WebDriverWait(browser, 60)
    try:  # `#/experiments/ID` opens the GenAI overview; the runs table is `#/experiments/ID/runs`
        browser.get(f"{ui_url}/#/experiments/{experiment_id}/runs")
        # Trial runs are nested under the study run, collapsed: expand it with the button in its name cell.
        expand = (By.XPATH, "//div[@role='gridcell'][.//a[normalize-space()='tiny']]//button")
        wait.until(expected_conditions.element_to_be_clickable(expand)).click()
        with contextlib.suppress(TimeoutException):  # the assertion below says which runs are missing
            wait.until(lambda driver: listed(driver) >= RUN_NAMES)
    finally:
        browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 0
    assert listed(browser) == RUN_NAMES, f"the runs table, as in {screenshot}"
