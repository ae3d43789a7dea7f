import pytest
from prometheus_client import REGISTRY

# Targets for the delivery metrics, as the provisioning tests make them.
from tests.provisioning.conftest import (  # noqa: F401
    rfc_profile,
    scim2_url,
    shipped_profiles,
    target_factory,
)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample in this process's registry (0 when it has not been recorded)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics_token(settings) -> str:  # type: ignore[no-untyped-def]
    settings.METRICS_TOKEN = "scrape-token-for-tests"
    return settings.METRICS_TOKEN
