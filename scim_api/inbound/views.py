"""POST /scim/v2/bulkUpload (Entra's API-driven inbound provisioning shape) and the job resource.

A source's own token is its credential: `/bulkUpload` finds the source from the
token, `/inbound/<source>/bulkUpload` checks that the token is that source's.
An upload answers 202 with the job's URL in `Location`; the job resource
(GET, same token) gives its status, counts and each operation's outcome.
`?dryRun=true` answers 200 with the outcomes the upload would have, writing
nothing. GET on a bulkUpload URL describes what the source accepts.
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from scim_api.authentication import Grant
from scim_api.conf import scim_setting
from scim_api.exceptions import SCIM_CONTENT_TYPE, ScimError
from scim_api.inbound import render, services
from scim_api.inbound.models import InboundJob, InboundRecord, InboundSource
from scim_api.models import ScimClient
from scim_api.views import ScimAPIView

DEFAULT_OPERATIONS_PAGE = 1000
MAX_OPERATIONS_PAGE = 10_000


class ScimClientPermission(BasePermission):
    """Any valid token; which source it may use is the view's check (403 with the reason)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ScimClient) and isinstance(request.auth, Grant)


class InboundView(ScimAPIView):
    permission_classes = [ScimClientPermission]

    def source_for(self, name: str | None, *, write: bool) -> InboundSource:
        client = self.request.user
        queryset = InboundSource.objects.select_related("client")
        if name is None:
            source = queryset.filter(client=client).first()
            if source is None:
                raise ScimError(
                    "This token belongs to no inbound source; upload with the token of an inbound source "
                    "(admin: Inbound sources).",
                    status=403,
                )
        else:
            source = queryset.filter(name=name).first()
            # The same answer whether the source exists or belongs to another token.
            if source is None or source.client_id != client.pk:
                raise ScimError(f"This token may not use the inbound source {name!r}.", status=403)
        if write:
            grant = self.request.auth
            if not isinstance(grant, Grant) or not grant.can_write:
                raise ScimError("This token has the read scope only.", status=403)
            if not source.enabled:
                raise ScimError(f"The inbound source {source.name!r} is disabled.", status=403)
        return source


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class BulkUploadView(InboundView):
    def get(self, request: Request, source: str | None = None) -> Response:
        found = self.source_for(source, write=False)
        body = render.source_document(
            found,
            max_operations=services.max_operations(found),
            max_payload=scim_setting("INBOUND_MAX_PAYLOAD_SIZE"),
            base_url=self.base_url,
        )
        return Response(body, content_type=SCIM_CONTENT_TYPE)

    def post(self, request: Request, source: str | None = None) -> Response:
        found = self.source_for(source, write=True)
        limit = scim_setting("INBOUND_MAX_PAYLOAD_SIZE")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise ScimError(f"A bulk upload may be at most {limit} bytes; this one has {length}.", status=413)
        upload = services.parse_upload(request.data, limit=services.max_operations(found))
        if _flag(self.params().get("dryrun")):
            records = services.dry_run(source=found, operations=upload.operations)
            return Response(
                render.dry_run_document(found, records, self.base_url), content_type=SCIM_CONTENT_TYPE
            )
        job = services.job_stage(
            source=found,
            operations=upload.operations,
            fail_on_errors=upload.fail_on_errors,
            created_by=found.client.name,
        )
        counts = {outcome: 0 for outcome in InboundRecord.Outcome.values}
        counts[InboundRecord.Outcome.PENDING] = job.total
        body = render.job_document(job, counts=counts, records=[], base_url=self.base_url)
        response = Response(body, status=202, content_type=SCIM_CONTENT_TYPE)
        response["Location"] = render.job_url(self.base_url, job)
        return response


class JobView(InboundView):
    def get(self, request: Request, source: str, job_id: str) -> Response:
        found = self.source_for(source, write=False)
        try:
            pk = uuid.UUID(job_id)
        except ValueError:
            raise ScimError(f"No job {job_id!r}", status=404) from None
        job = InboundJob.objects.filter(pk=pk, source=found).first()
        if job is None:
            raise ScimError(f"No job {job_id!r} for the inbound source {found.name!r}", status=404)
        job.source = found
        params = self.params()
        start = _integer(params, "startindex", 1, minimum=1)
        count = min(_integer(params, "count", DEFAULT_OPERATIONS_PAGE, minimum=0), MAX_OPERATIONS_PAGE)
        records = job.records.order_by("index")
        outcome = params.get("outcome")
        if outcome:
            if outcome not in InboundRecord.Outcome.values:
                raise ScimError(
                    f"outcome must be one of {', '.join(InboundRecord.Outcome.values)}",
                    scim_type="invalidValue",
                )
            records = records.filter(outcome=outcome)
        page = list(records[start - 1 : start - 1 + count]) if count else []
        counts = job.counts if job.is_finished and job.counts else services.job_counts(job)
        body = render.job_document(
            job, counts=counts, records=page, base_url=self.base_url, start_index=start
        )
        if outcome:
            body["totalResults"] = counts.get(outcome, 0)
        return Response(body, content_type=SCIM_CONTENT_TYPE)


def _integer(params: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        return min(max(minimum, int(str(raw))), 2**31)
    except ValueError:
        raise ScimError(f"{name} must be an integer, got {raw!r}", scim_type="invalidValue") from None
