"""Test connection: can this target be provisioned? A few read-only requests, each explained.

The checks, in order: the credentials are accepted (GET /Users), the
discovery documents are readable (/ServiceProviderConfig, /Schemas), a filter
on each object type's first matching attribute with a random value returns an
empty list (a target that ignores filters would make matching adopt the wrong
account; Entra's own connection test does this), and index paging honours
`startIndex` and `count`. Nothing is written to the target.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from provisioning.clients import (
    LIST_RESPONSE,
    ScimConnection,
    ScimError,
    TargetMisconfigured,
    TransientError,
    filter_eq,
)
from provisioning.crypto import CredentialsUnreadable
from provisioning.models import ObjectType, Target
from provisioning.services import target_connection

SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


@dataclass
class Check:
    """One check's result: `status` is "pass", "fail" or "skipped"; `explanation` says what it means."""

    name: str
    status: str
    explanation: str
    request: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "pass"


def _failure(exc: ScimError) -> str:
    if isinstance(exc, TargetMisconfigured):
        return (
            f"the target refused the credentials ({exc.status}): check the token or the client secret ({exc})"
        )
    if isinstance(exc, TransientError) and exc.status is None:
        return f"no answer: {exc}. Check the base URL, the network path and the timeouts"
    return str(exc)


def _list_response(body: Any) -> bool:
    return isinstance(body, dict) and (
        LIST_RESPONSE in (body.get("schemas") or []) or isinstance(body.get("Resources"), list)
    )


class _Tester:
    def __init__(self, target: Target, connection: ScimConnection) -> None:
        self.target, self.connection = target, connection

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.connection.request("GET", path, params=params)

    @staticmethod
    def shown(path: str, params: dict[str, Any] | None = None) -> str:
        return "GET " + path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")

    def authentication(self) -> Check:
        params = {"startIndex": 1, "count": 1}
        name, request = "Authentication", self.shown("Users", params)
        try:
            body = self.get("Users", params)
        except ScimError as exc:
            return Check(name, "fail", _failure(exc), request)
        if not _list_response(body):
            return Check(
                name,
                "fail",
                "the target answered, but not with a SCIM ListResponse: is the base URL the SCIM root "
                "(the path before /Users)?",
                request,
            )
        return Check(
            name, "pass", "the credentials were accepted and /Users answered a ListResponse", request
        )

    def service_provider_config(self) -> Check:
        name, request = "/ServiceProviderConfig", self.shown("ServiceProviderConfig")
        try:
            body = self.get("ServiceProviderConfig")
        except ScimError as exc:
            return Check(name, "fail", f"not readable: {_failure(exc)}", request)
        if not isinstance(body, dict) or SPC_SCHEMA not in (body.get("schemas") or []):
            return Check(name, "fail", "the answer is not a ServiceProviderConfig document", request)

        def supported(feature: str) -> str:
            value = body.get(feature)
            return "yes" if isinstance(value, dict) and value.get("supported") else "no"

        facts = ", ".join(
            f"{feature}: {supported(feature)}" for feature in ("patch", "filter", "bulk", "etag")
        )
        explanation = f"readable ({facts})"
        if supported("patch") == "no" and self.target.profile.user_update_method == "patch":
            explanation += "; the target says it cannot PATCH: choose a vendor profile that updates with PUT"
        return Check(name, "pass", explanation, request)

    def schemas(self) -> Check:
        name, request = "/Schemas", self.shown("Schemas")
        try:
            body = self.get("Schemas")
        except ScimError as exc:
            return Check(name, "fail", f"not readable: {_failure(exc)}", request)
        resources = body.get("Resources") if isinstance(body, dict) else body
        if not isinstance(resources, list):
            return Check(name, "fail", "the answer is neither a ListResponse nor a list of schemas", request)
        ids = [str(item.get("id")) for item in resources if isinstance(item, dict) and item.get("id")]
        if USER_SCHEMA not in ids:
            return Check(
                name, "fail", f"no core User schema among {len(ids)} schemas: {', '.join(ids)}", request
            )
        return Check(name, "pass", f"{len(ids)} schemas, the core User schema among them", request)

    def matching_filter(self, object_type: str) -> Check:
        endpoint = "Users" if object_type == ObjectType.USER else "Groups"
        profile = self.target.profile
        attributes = [a for a in self.target.matching_for(object_type) if profile.can_filter(a)]
        if not attributes:
            return Check(
                f"Filter on {endpoint}",
                "skipped",
                "no matching attribute the vendor profile can filter on: objects are always created, "
                "never matched",
            )
        attribute = attributes[0]
        params = {
            "filter": filter_eq(attribute, f"test-connection-{uuid.uuid4()}"),
            "startIndex": 1,
            "count": 2,
        }
        name, request = f"Filter on {endpoint}.{attribute}", self.shown(endpoint, params)
        try:
            body = self.get(endpoint, params)
        except ScimError as exc:
            if exc.status == 400:
                return Check(
                    name,
                    "fail",
                    f"the target cannot filter on {attribute} ({exc}): matching would never find an "
                    "existing account; remove it from the matching attributes or the profile's filterable "
                    "attributes",
                    request,
                )
            return Check(name, "fail", _failure(exc), request)
        if not _list_response(body):
            return Check(name, "fail", "the answer is not a ListResponse", request)
        found = [item for item in body.get("Resources") or [] if isinstance(item, dict)]
        total = body.get("totalResults")
        if found or (isinstance(total, int) and total > 0):
            count = max(len(found), total if isinstance(total, int) else 0)
            return Check(
                name,
                "fail",
                f"a random {attribute} matched {count} resource(s): the target ignores this filter, so "
                "matching would adopt the wrong account",
                request,
            )
        return Check(name, "pass", f"a random {attribute} matched nothing, as it should", request)

    def paging(self) -> Check:
        first_params = {"startIndex": 1, "count": 1}
        name, request = "Paging", self.shown("Users", first_params)
        try:
            first = self.get("Users", first_params)
        except ScimError as exc:
            return Check(name, "fail", _failure(exc), request)
        if not _list_response(first):
            return Check(name, "fail", "the answer is not a ListResponse", request)
        page = [item for item in first.get("Resources") or [] if isinstance(item, dict)]
        if len(page) > 1:
            return Check(
                name, "fail", f"count=1 returned {len(page)} users: the target ignores count", request
            )
        if first.get("startIndex") not in (None, 1, "1"):
            return Check(name, "fail", f"asked for startIndex=1, answered {first.get('startIndex')}", request)
        total = first.get("totalResults")
        if not isinstance(total, int) or total < 2:
            return Check(
                name,
                "pass",
                f"count is honoured; with {total if isinstance(total, int) else 'an unknown number of'} "
                "user(s) on the target, startIndex could not be checked across pages",
                request,
            )
        second_params = {"startIndex": 2, "count": 1}
        request += "; " + self.shown("Users", second_params)
        try:
            second = self.get("Users", second_params)
        except ScimError as exc:
            return Check(name, "fail", _failure(exc), request)
        other = [item for item in (second or {}).get("Resources") or [] if isinstance(item, dict)]
        if len(other) != 1:
            return Check(name, "fail", f"startIndex=2&count=1 returned {len(other)} users", request)
        if page and other[0].get("id") == page[0].get("id"):
            return Check(
                name,
                "fail",
                "startIndex=2 returned the same user as startIndex=1: startIndex is ignored",
                request,
            )
        return Check(
            name, "pass", f"count and startIndex are honoured ({total} users on the target)", request
        )


def target_test_connection(*, target: Target, connection: ScimConnection | None = None) -> list[Check]:
    """Run every check against the target; later checks are skipped when the credentials are refused."""
    try:
        conn = connection or target_connection(target)
    except CredentialsUnreadable as exc:
        return [Check("Authentication", "fail", f"the stored credentials cannot be decrypted: {exc}")]
    tester = _Tester(target, conn)
    auth = tester.authentication()
    checks = [auth]
    later = [
        tester.service_provider_config,
        tester.schemas,
        lambda: tester.matching_filter(ObjectType.USER),
        lambda: tester.matching_filter(ObjectType.GROUP),
        tester.paging,
    ]
    if not auth.ok:
        names = ["/ServiceProviderConfig", "/Schemas", "Filter on Users", "Filter on Groups", "Paging"]
        checks += [Check(name, "skipped", "not tried: authentication failed") for name in names]
        return checks
    checks += [check() for check in later]
    return checks
