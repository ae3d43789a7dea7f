"""The job resource: an upload's status, its counts, and each operation's outcome, as JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scim_api import mapping
from scim_api.inbound.models import InboundJob, InboundRecord, InboundSource
from scim_api.schema import USER

JOB_SCHEMA = "urn:directory:params:scim:api:messages:1.0:InboundJob"
OUTCOMES = tuple(InboundRecord.Outcome.values)


def _timestamp(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def job_url(base_url: str, job: InboundJob) -> str:
    return f"{base_url}/inbound/{job.source.name}/jobs/{job.pk}"


def operation(record: InboundRecord, base_url: str) -> dict[str, Any]:
    """One operation's outcome: bulkId, outcome, the user's id and location, and why, or its SCIM error."""
    entry: dict[str, Any] = {
        "bulkId": record.bulk_id or None,
        "index": record.index,
        "outcome": record.outcome,
    }
    if record.key:
        entry["key"] = record.key
    if record.user_id is not None:
        entry["id"] = str(record.user_id)
        if record.outcome != InboundRecord.Outcome.DELETED:
            entry["location"] = mapping.location(base_url, USER, record.user_id)
    if record.reason:
        entry["reason"] = record.reason
    if record.changes:
        entry["changed"] = sorted(record.changes)
    if record.warnings:
        entry["warnings"] = list(record.warnings)
    if record.error:
        entry["error"] = record.error
    return entry


def counts_of(records: Iterable[InboundRecord]) -> dict[str, int]:
    counts = {outcome: 0 for outcome in InboundRecord.Outcome.values}
    for record in records:
        counts[record.outcome] += 1
    return counts


def job_document(
    job: InboundJob,
    *,
    counts: dict[str, int],
    records: list[InboundRecord],
    base_url: str,
    start_index: int = 1,
) -> dict[str, Any]:
    return {
        "schemas": [JOB_SCHEMA],
        "id": str(job.pk),
        "source": job.source.name,
        "origin": job.origin,
        "status": job.status,
        "detail": job.detail or None,
        "created": _timestamp(job.created),
        "started": _timestamp(job.started),
        "finished": _timestamp(job.finished),
        "failOnErrors": job.fail_on_errors,
        "counts": {"total": job.total, **{outcome: counts.get(outcome, 0) for outcome in OUTCOMES}},
        "totalResults": job.total,
        "startIndex": start_index,
        "itemsPerPage": len(records),
        "operations": [operation(record, base_url) for record in records],
        "meta": {"resourceType": "InboundJob", "location": job_url(base_url, job)},
    }


def dry_run_document(source: InboundSource, records: list[InboundRecord], base_url: str) -> dict[str, Any]:
    counts = counts_of(records)
    failed = counts[InboundRecord.Outcome.FAILED]
    return {
        "schemas": [JOB_SCHEMA],
        "source": source.name,
        "dryRun": True,
        "status": "completedWithErrors" if failed else "completed",
        "counts": {"total": len(records), **counts},
        "operations": [operation(record, base_url) for record in records],
    }


def source_document(
    source: InboundSource, *, max_operations: int, max_payload: int, base_url: str
) -> dict[str, Any]:
    """What a source accepts: limits, matching and the actions it may take (GET on its bulkUpload URL)."""
    return {
        "schemas": ["urn:directory:params:scim:api:messages:1.0:InboundSource"],
        "source": source.name,
        "enabled": source.enabled,
        "bulkUpload": f"{base_url}/inbound/{source.name}/bulkUpload",
        "maxOperations": max_operations,
        "maxPayloadSize": max_payload,
        "matching": {"source": source.match_source, "target": source.match_label},
        "actions": {
            "create": source.allow_create,
            "update": source.allow_update,
            "enable": source.allow_enable,
            "disable": source.allow_disable,
            "leavers": source.leaver_action,
        },
        "effectiveDates": {
            "hireDate": source.hire_date_source or None,
            "terminationDate": source.termination_date_source or None,
        },
    }
