"""The operations dashboard in a real browser: an operator logs in, opens it from the admin index, and
sees the charts drawn, in the light and the dark theme.

Screenshots of the whole page are saved for people to look at (not compared):
var/test-artifacts/dashboard-24h.png, dashboard-7d.png and dashboard-dark.png,
or under TEST_ARTIFACTS_DIR when set.
"""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.dashboard.seed import HELD, seed_dashboard
from tests.e2e.conftest import ARTIFACTS_DIR
from tests.e2e.test_admin_browser import OPERATOR_NAME, OPERATOR_PASSWORD, log_in, wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TARGETS = 4
CHARTS_PER_TARGET = 3


def full_page_screenshot(driver: WebDriver, name: str) -> Path:
    """The whole page, not just the window: the window is grown to the document's height first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 120, 6000))
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def check_charts_drawn(driver: WebDriver) -> list[str]:
    """Every chart is visible, has a real size and a drawn line; returns the main lines' stroke colours."""
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == TARGETS * CHARTS_PER_TARGET
    strokes = []
    for chart in charts:
        assert chart.is_displayed()
        assert chart.size["width"] >= 250, chart.size
        assert chart.size["height"] >= 90, chart.size
        lines = chart.find_elements(By.CSS_SELECTOR, "polyline.chart-line")
        assert lines, chart.get_attribute("outerHTML")[:300]
        # The line is stroked by the page's CSS (admin colour variables), not left unstyled.
        stroke = lines[0].value_of_css_property("stroke")
        assert stroke not in ("none", ""), stroke
        assert lines[0].value_of_css_property("fill") == "none"
        strokes.append(stroke)
    return strokes


def test_operator_opens_the_dashboard_and_sees_the_charts(
    browser: WebDriver, live_server: LiveServer
) -> None:
    get_user_model().objects.create_superuser(OPERATOR_NAME, "op@example.com", OPERATOR_PASSWORD)
    seed_dashboard(now=timezone.now())

    log_in(browser, live_server.url)
    link = browser.find_element(By.CSS_SELECTOR, "#dashboard-link a")
    link.click()
    wait(browser).until(ec.staleness_of(link))
    wait(browser).until(ec.visibility_of_element_located((By.ID, "dashboard")))

    assert browser.title.startswith("Operations dashboard")
    assert browser.find_element(By.ID, "count-targets").text == str(TARGETS)
    assert browser.find_element(By.ID, "count-held").text == str(HELD)
    badges = [badge.text for badge in browser.find_elements(By.CSS_SELECTOR, ".dash-target .dash-badge")]
    assert badges == ["quarantined", "degraded", "healthy", "paused"]
    light = check_charts_drawn(browser)
    # A point's tooltip names the bucket and the value.
    tooltip = browser.find_element(By.CSS_SELECTOR, "svg.chart circle.chart-dot title")
    assert ":" in tooltip.get_attribute("textContent")
    day = full_page_screenshot(browser, "dashboard-24h.png")

    browser.find_element(By.LINK_TEXT, "Last 7 days").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.chart[data-buckets='28']")))
    check_charts_drawn(browser)
    week = full_page_screenshot(browser, "dashboard-7d.png")

    # The admin's theme switch keeps its choice in localStorage; the charts follow it.
    browser.execute_script("localStorage.setItem('theme', 'dark')")
    browser.refresh()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "dashboard")))
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == "dark"
    dark = check_charts_drawn(browser)
    assert dark[0] != light[0]
    background = browser.find_element(By.TAG_NAME, "body").value_of_css_property("background-color")
    assert background != "rgba(255, 255, 255, 1)"
    night = full_page_screenshot(browser, "dashboard-dark.png")

    for path in (day, week, night):
        assert path.stat().st_size > 20_000, path
    print(f"\ndashboard screenshots: {day}, {week}, {night}")
