from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model

from directory import extensions
from directory.actors import Actor
from tests.factories import GroupFactory, UserFactory
from tests.processes import Processes


@pytest.fixture
def actor() -> Actor:
    return Actor.operator(id=1, name="alice-operator")


@pytest.fixture
def user_factory() -> type[UserFactory]:
    return UserFactory


@pytest.fixture
def group_factory() -> type[GroupFactory]:
    return GroupFactory


@pytest.fixture
def operator_user(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_superuser(
        "operator", "operator@example.com", "correct-horse-battery"
    )


@pytest.fixture
def admin_client_logged_in(client, operator_user):  # type: ignore[no-untyped-def]
    client.force_login(operator_user)
    return client


@pytest.fixture(autouse=True)
def _no_extension_schemas() -> None:
    # A fresh test database defines no extension schema, whatever an earlier (rolled back)
    # test defined and this process cached; tests without database access need no query.
    extensions.assume(extensions.Definitions())


@pytest.fixture
def processes(transactional_db, tmp_path, monkeypatch) -> Iterator[Processes]:  # type: ignore[no-untyped-def]
    """Real workers, beat and web servers for this test (tests.processes); what it queues goes to them."""
    started = Processes(tmp_path)
    started.route_here(monkeypatch)
    yield started
    started.stop_all()
