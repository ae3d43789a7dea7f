"""The operator's admin, driven through a real browser.

The Django test client cannot run the admin's JavaScript: the inline "Add
another" row and the select2 autocomplete for the group only exist in a
browser. This walks the operator's everyday path end to end, as Django's own
admin selenium tests do, and then checks that the write went through the
services (outbox event, operator audit entry) rather than Model.save.
"""

import uuid

import pytest
from django.contrib.auth import get_user_model
from pytest_django.live_server_helper import LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from directory import services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, Group, Membership, User

# Generous for a loaded CI machine, yet the whole test stays well under 30 s when healthy.
WAIT_SECONDS = 10

OPERATOR_NAME = "operator"
OPERATOR_PASSWORD = "correct-horse-battery"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_SECONDS)


def submit(driver: WebDriver, name: str) -> None:
    """Press a submit button and wait for the next page, so no check runs against the old one."""
    button = driver.find_element(By.CSS_SELECTOR, f"input[type=submit][name='{name}']")
    button.click()
    wait(driver).until(ec.staleness_of(button))


def log_in(driver: WebDriver, base_url: str) -> None:
    driver.get(f"{base_url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys(OPERATOR_NAME)
    driver.find_element(By.NAME, "password").send_keys(OPERATOR_PASSWORD)
    button = driver.find_element(By.CSS_SELECTOR, "input[type=submit]")
    button.click()
    wait(driver).until(ec.staleness_of(button))
    # The logout form is only on pages for a logged-in staff user: a bad login re-renders the form instead.
    wait(driver).until(ec.presence_of_element_located((By.ID, "logout-form")))


def success_message(driver: WebDriver) -> str:
    """The admin's green "was added/changed successfully" banner; an error page has none."""
    return (
        wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".messagelist .success"))).text
    )


def choose_in_autocomplete(driver: WebDriver, row: WebElement, typed: str, choice: str) -> None:
    """Pick `choice` in the select2 autocomplete inside `row`, the way an operator does.

    select2 renders its dropdown at the end of <body>, not inside the row, so the
    search box and results are found from the document, scoped to the open dropdown.
    """
    row.find_element(By.CSS_SELECTOR, ".select2-selection").click()
    search = wait(driver).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".select2-container--open .select2-search__field"))
    )
    search.send_keys(typed)
    # Results arrive from /admin/autocomplete/ over XHR; "Searching…" shows first, so wait for the text.
    option_locator = (
        By.XPATH,
        "//span[contains(@class, 'select2-container--open')]"
        f"//li[contains(@class, 'select2-results__option') and normalize-space()='{choice}']",
    )
    option = wait(driver).until(ec.element_to_be_clickable(option_locator))
    option.click()
    wait(driver).until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, f"#{row.get_attribute('id')} .select2-selection__rendered"), choice
        )
    )


@pytest.fixture
def operator_account() -> None:
    # A Django auth superuser: the admin's login, distinct from the directory's own users.
    get_user_model().objects.create_superuser(OPERATOR_NAME, "op@example.com", OPERATOR_PASSWORD)


@pytest.fixture
def engineers() -> Group:
    return services.group_create(actor=Actor.system("test"), display_name="Engineers")


@pytest.mark.usefixtures("operator_account")
def test_operator_creates_a_user_and_adds_it_to_a_group(
    browser: WebDriver, live_server: LiveServer, engineers: Group
) -> None:
    base_url = live_server.url
    log_in(browser, base_url)

    # 1. Create the directory user through the add form.
    browser.get(f"{base_url}/admin/directory/user/add/")
    browser.find_element(By.NAME, "user_name").send_keys("ada.lovelace")
    browser.find_element(By.NAME, "display_name").send_keys("Ada Lovelace")
    submit(browser, "_continue")
    assert "was added successfully" in success_message(browser)
    assert "/change/" in browser.current_url, browser.current_url
    user_id = uuid.UUID(browser.current_url.rstrip("/").split("/")[-2])
    user = User.objects.get(pk=user_id)
    assert (user.user_name, user.display_name) == ("ada.lovelace", "Ada Lovelace")

    # 2. Add it to Engineers through the memberships inline on its change page.
    inline = browser.find_element(By.ID, "memberships-group")
    inline.find_element(By.CSS_SELECTOR, ".add-row a").click()
    # The user has no memberships yet, so the row the click added is the first form.
    row = wait(browser).until(ec.visibility_of_element_located((By.ID, "memberships-0")))
    choose_in_autocomplete(browser, row, "Eng", "Engineers")
    # The hidden <select> is what the form posts: it must carry the group's id, not just show its name.
    selected = browser.find_element(By.CSS_SELECTOR, "#id_memberships-0-group option:checked")
    assert selected.get_attribute("value") == str(engineers.pk)
    submit(browser, "_continue")
    assert "was changed successfully" in success_message(browser)

    # 3. The membership is listed: in the inline after the reload, and in the memberships changelist.
    saved_group = browser.find_element(By.CSS_SELECTOR, "#memberships-0 .select2-selection__rendered")
    assert "Engineers" in saved_group.text
    browser.get(f"{base_url}/admin/directory/membership/?q=ada.lovelace")
    rows = wait(browser).until(
        ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#result_list tbody tr"))
    )
    cells = [[cell.text for cell in tr.find_elements(By.CSS_SELECTOR, "th, td")] for tr in rows]
    assert any("Engineers" in row_cells and "ada.lovelace" in row_cells for row_cells in cells), cells

    # 4. The write went through the services: the row, its outbox event and an operator audit entry.
    assert Membership.objects.filter(
        group__display_name="Engineers", member_user__user_name="ada.lovelace"
    ).exists()
    assert ChangeEvent.objects.filter(
        object_type=ChangeEvent.ObjectType.GROUP,
        object_id=engineers.pk,
        kind=ChangeEvent.Kind.MEMBER_ADDED,
        member_type=ChangeEvent.ObjectType.USER,
        member_id=user_id,
    ).exists()
    audit = AuditEntry.objects.get(object_id=engineers.pk, action="member_add")
    assert (audit.actor_type, audit.actor_name) == (AuditEntry.ActorType.OPERATOR, OPERATOR_NAME)
    assert audit.changes == {"users_added": [str(user_id)]}
    # The user itself was created by the operator too, not by a direct Model.save.
    assert AuditEntry.objects.filter(
        object_id=user_id, actor_type=AuditEntry.ActorType.OPERATOR, actor_name=OPERATOR_NAME
    ).exists()
