from typing import Any

import pytest
from django.test import Client

from scim_api.inbound import services
from scim_api.inbound.models import InboundJob, InboundSource
from tests.scim_api.conftest import Reply, Scim

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def worker_record(
    key: str,
    *,
    user_name: str | None = None,
    active: bool | None = True,
    manager: str | None = None,
    department: str | None = "Engineering",
    **extra: Any,
) -> dict[str, Any]:
    """A worker record as an HR system sends it in Entra's shape (core + enterprise)."""
    enterprise: dict[str, Any] = {"employeeNumber": key}
    if department is not None:
        enterprise["department"] = department
    if manager is not None:
        enterprise["manager"] = {"value": manager}
    data: dict[str, Any] = {
        "schemas": [CORE, ENTERPRISE],
        "externalId": key,
        "userName": user_name or f"worker{key}@example.com",
        "name": {"givenName": "Worker", "familyName": key},
        ENTERPRISE: enterprise,
        **extra,
    }
    if active is not None:
        data["active"] = active
    return data


def bulk(*records: dict[str, Any], fail_on_errors: int | None = None) -> dict[str, Any]:
    return {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "bulkId": f"b{index}", "path": "/Users", "data": record}
            for index, record in enumerate(records)
        ],
        "failOnErrors": fail_on_errors,
    }


@pytest.fixture
def hr_source(db) -> tuple[InboundSource, str]:  # type: ignore[no-untyped-def]
    return services.source_create(name="hr")


@pytest.fixture
def hr(client: Client, hr_source: tuple[InboundSource, str]) -> Scim:
    return Scim(client, hr_source[1])


class Uploader:
    """Uploads through the HTTP API and applies the job in this process, as a worker would."""

    def __init__(self, scim: Scim, path: str = "bulkUpload") -> None:
        self.scim, self.path = scim, path

    def upload(self, body: dict[str, Any], *, apply: bool = True) -> Reply:
        reply = self.scim.post(self.path, body)
        assert reply.status == 202, reply
        if apply:
            services.jobs_drain(job_id=reply.body["id"])
        return reply

    def job(self, reply: Reply, **params: Any) -> dict[str, Any]:
        location = reply.headers["Location"]
        job = self.scim.get(location.split("/scim/v2/", 1)[1], **params)
        assert job.status == 200, job
        return job.body  # type: ignore[no-any-return]

    def run(self, *records: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self.job(self.upload(bulk(*records, **kwargs)))


@pytest.fixture
def uploader(hr: Scim) -> Uploader:
    return Uploader(hr)


def outcomes(job: dict[str, Any]) -> list[str]:
    return [operation["outcome"] for operation in job["operations"]]


def job_row(job: dict[str, Any]) -> InboundJob:
    return InboundJob.objects.get(pk=job["id"])
