"""Fixtures for the real-browser tests: a headless Debian chromium driven through chromedriver.

The driver is built for this machine: no network beyond loopback, running as
root, and no driver download (Selenium Manager would try to fetch one unless
handed the chromedriver path and told to stay offline).
"""

import os
import re
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Screenshots: of failed tests, and the ones the dashboard test takes for people to look at.
ARTIFACTS_DIR = Path(
    os.environ.get("TEST_ARTIFACTS_DIR") or Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
)

# Each phase's report (setup, call, teardown), kept on the item so the driver
# fixture's teardown can tell whether the test itself failed.
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

CHROMIUM_FLAGS = [
    "--headless=new",
    # Chromium will not start as root with its sandbox on; /dev/shm is small in containers.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # Closed network: no QUIC probes, updates, sync or first-run fetches that
    # would only time out and slow the page loads down.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Wide enough that the admin's tabular inlines are not squeezed into scrolling.
    "--window-size=1400,1000",
]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(PHASE_REPORTS, {})
    return any(report.failed for report in reports.values())


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Generator[webdriver.Chrome, None, None]:
    """A fresh headless chromium; on failure its last screen is saved under ARTIFACTS_DIR."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        # tests.realservices normally skips first; this covers running the module without the marker.
        pytest.skip("chromium and chromedriver are needed on PATH")
    # Selenium Manager must not go looking for a driver on the network.
    monkeypatch.setenv("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory(prefix="e2e-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        # A throwaway profile per test: no state (cookies, cache) leaks between tests.
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        try:
            yield driver
        finally:
            try:
                if _failed(request.node):
                    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
                    path = ARTIFACTS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}.png"
                    driver.save_screenshot(str(path))
                    print(
                        f"\nscreenshot of the failed test's browser: {path} (page was {driver.current_url})"
                    )
            finally:
                driver.quit()
