"""The live dashboard in headless Chromium, against a real ``veilfl server`` process
and two ``veilfl client`` processes on loopback (on a tiny MNIST).

The page is opened before any client joins and never reloaded: it must show round 1
completing (its row, its accuracy point) and then the run done, by polling alone, with
no error in the browser's console (a script or style the page's Content-Security-Policy
blocked would be one). ``/metrics`` scraped before and after shows the counters moving.
The screenshot is saved under the test's tmp dir and its path printed: CI keeps it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.cli.processes import write_tiny_mnist
from tests.e2e.processes import PLAINTEXT, free_port, running, veilfl_command, wait_until_serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,2000",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver, with a fresh profile."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        why = (
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must install them (.ci/run does): this test {why}")
        pytest.skip(f"this test {why}")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_the_dashboard_shows_rounds_completing_live_in_chromium(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("VEILFL_MNIST_DIR", str(write_tiny_mnist(tmp_path / "mnist")))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    server = veilfl_command(
        "server",
        "--run-dir",
        str(tmp_path / "run"),
        "--port",
        str(port),
        "--rounds",
        "2",
        "--clients-per-round",
        "2",
        "--min-clients",
        "2",
        "--linger",
        "120",
        *PLAINTEXT,
    )
    accepted = ("veilfl_updates_accepted_total", frozenset({("kind", "update")}))
    completed = ("veilfl_rounds_completed_total", frozenset())
    with ExitStack() as stack:
        coordinator = stack.enter_context(running(server, server_log))
        wait_until_serving(url, coordinator, server_log)
        before = _scrape(url)
        assert (before[accepted], before[completed]) == (0, 0)

        browser.get(f"{url}/dashboard")
        # The page redraws elements as updates arrive: a lookup can meet a replaced one.
        wait = WebDriverWait(
            browser, 240, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
        )
        wait.until(lambda d: d.find_element(By.ID, "stat-phase").text == "collecting")
        assert "live" in browser.find_element(By.ID, "connection").get_attribute("class")
        browser.execute_script("window.openedOnce = 'yes';")  # gone if the page reloads

        clients = []
        for index in range(2):
            log = tmp_path / f"client-{index}.log"
            cmd = veilfl_command(
                *("client", "--server", url, "--client-index", str(index), "--num-clients", "2"),
                "--insecure",
                "--allow-plaintext",
            )
            clients.append((stack.enter_context(running(cmd, log)), log))

        first_completed = '#rounds tr[data-round="1"][data-state="completed"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, first_completed))
        first_point = '#chart-accuracy circle[data-round="1"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, first_point))
        for process, log in clients:
            assert process.wait(timeout=240) == 0, log.read_text()[-3000:]
        wait.until(lambda d: d.find_element(By.ID, "stat-phase").text == "done")
        assert browser.execute_script("return window.openedOnce;") == "yes"
        # Read in one script: the table is redrawn on every update, so an element found
        # by one WebDriver call can be gone (stale) by the next.
        row_text, completed_text = browser.execute_script(
            "return [document.querySelector('#rounds tr[data-round=\"1\"]').innerText,"
            " document.getElementById('stat-completed').innerText];"
        )
        assert "2 of 2" in row_text
        assert completed_text == "2"
        screenshot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(screenshot))
        print(f"dashboard screenshot: {screenshot}")

        after = _scrape(url)
        assert after[completed] == 2
        assert after[accepted] >= 4  # 2 clients x 2 rounds (a retried upload counts again)
        assert after[("veilfl_run_rounds_completed", frozenset())] == 2
        assert ("veilfl_test_accuracy", frozenset()) in after
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == [], severe
    assert screenshot.stat().st_size > 10_000
