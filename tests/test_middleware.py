"""The browser-only middleware still guards the admin, and stays out of the SCIM and OAuth APIs."""

from http import HTTPStatus

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_admin_still_checks_csrf_and_uses_sessions():
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    assert page.status_code == HTTPStatus.OK
    assert "csrftoken" in page.cookies
    assert page["X-Frame-Options"] == "DENY"

    forged = client.post("/admin/login/", {"username": "x", "password": "y"})
    assert forged.status_code == HTTPStatus.FORBIDDEN

    token = page.cookies["csrftoken"].value
    real = client.post("/admin/login/", {"username": "x", "password": "y", "csrfmiddlewaretoken": token})
    assert real.status_code == HTTPStatus.OK  # the form again, with its error: CSRF passed


@pytest.mark.parametrize("path", ["/scim/v2/ServiceProviderConfig", "/scim/v2/Users", "/oauth/token"])
def test_the_apis_get_no_session_csrf_or_messages(path):
    client = Client(enforce_csrf_checks=True)
    response = client.post(path, "{}", content_type="application/json")
    # Bearer-token APIs: a POST without a CSRF token reaches the view, which answers it (405, 401,
    # 400), and no cookie is set.
    assert response.status_code != HTTPStatus.FORBIDDEN
    assert not response.cookies
    assert not hasattr(response.wsgi_request, "session")
    assert not hasattr(response.wsgi_request, "_messages")
    assert response["X-Content-Type-Options"] == "nosniff"
