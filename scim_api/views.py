"""SCIM 2.0 endpoints: parse the request, call one directory service or selector, render SCIM.

Cross-cutting behaviour lives in ScimViewSet: authentication, SCIM JSON in and
out, error mapping, dialect normalisation and its counters, ETags.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from functools import cached_property
from typing import Any, TypeVar

from django.db import transaction
from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from directory import selectors, services
from directory.actors import Actor
from directory.exceptions import InvalidValue, ObjectNotFound, VersionMismatch
from directory.models import Group, User
from scim_api import bulk, cursors, dialects, mapping
from scim_api.authentication import ScimScopePermission, ScimTokenAuthentication
from scim_api.conf import scim_setting
from scim_api.exceptions import SCIM_CONTENT_TYPE, ScimError, exception_handler
from scim_api.filter_parser import Comparison, FilterSyntaxError, Node, parse_filter
from scim_api.filters import InvalidFilter, compile_filter
from scim_api.inbound.models import InboundSource
from scim_api.models import ScimClient
from scim_api.pagination import Page
from scim_api.patch import apply_patch
from scim_api.projection import Projection
from scim_api.renderers import AlwaysScimNegotiation, PlainJSONParser, ScimJSONParser, ScimJSONRenderer
from scim_api.schema import (
    GROUP,
    LIST_RESPONSE,
    SEARCH_REQUEST,
    USER,
    Attribute,
    ResourceType,
    Schema,
    UnknownAttribute,
    get_registry,
)
from scim_api.services import dialect_rewrites_record
from scim_api.sorting import order_by
from scim_api.throttling import ScimClientRateThrottle


class ScimAPIView(APIView):
    """SCIM JSON in and out, SCIM errors, bearer tokens."""

    authentication_classes = [ScimTokenAuthentication]
    permission_classes = [ScimScopePermission]
    throttle_classes = [ScimClientRateThrottle]
    renderer_classes = [ScimJSONRenderer]
    parser_classes = [ScimJSONParser, PlainJSONParser]
    content_negotiation_class = AlwaysScimNegotiation

    def get_exception_handler(self) -> Any:
        return exception_handler

    # A view instance serves one request: both are worked out once, not per rendered resource.
    @cached_property
    def base_url(self) -> str:
        # What build_absolute_uri("/scim/v2") gives (an absolute path ignores the script prefix),
        # without its URL parsing and quoting.
        return f"{self.request.scheme}://{self.request.get_host()}/scim/v2"

    def params(self) -> dict[str, str]:
        # Parameter names compare case-insensitively: clients write startindex, StartIndex...
        return dict(self._params)

    @cached_property
    def _params(self) -> dict[str, str]:
        return {key.lower(): value for key, value in self.request.query_params.items()}


class ScimViewSet(ScimAPIView, viewsets.ViewSet):
    resource_type: ResourceType

    @property
    def client(self) -> ScimClient:
        return self.request.user  # type: ignore[return-value]

    @property
    def actor(self) -> Actor:
        return Actor.scim_client(id=self.client.pk, name=self.client.name)

    def body(self) -> dict[str, Any]:
        data = self.request.data
        if not isinstance(data, dict):
            raise ScimError("The request body must be a JSON object.", scim_type="invalidSyntax")
        return data

    def normalised(self, normalized: dialects.Normalized) -> dict[str, Any]:
        if normalized.fired:
            dialect_rewrites_record(client=self.client, names=normalized.fired)
        return normalized.body

    def projection(self, source: dict[str, Any] | None = None, *, lenient: bool = False) -> Projection:
        params = source if source is not None else self.params()
        return Projection.from_params(
            self.resource_type, params.get("attributes"), params.get("excludedattributes"), lenient=lenient
        )

    def expected_version(self) -> int | None:
        """The version an If-Match header names (RFC 7644 §3.14); None when absent or `*`."""
        header = self.request.headers.get("If-Match")
        if header is None or header.strip() == "*":
            return None
        version = _version_of(header)
        if version is None:
            raise ScimError(f"If-Match {header!r} is not an ETag this server issued.", status=412)
        return version

    def resource_response(
        self, resource: dict[str, Any], projection: Projection, *, status: int = 200, version: int
    ) -> Response:
        response = Response(projection.apply(resource), status=status, content_type=SCIM_CONTENT_TYPE)
        response["ETag"] = mapping.etag(version)
        if status == 201:
            response["Location"] = resource["meta"]["location"]
        return response

    def not_modified(self, version: int) -> Response | None:
        header = self.request.headers.get("If-None-Match")
        if header is None:
            return None
        tags = [_version_of(tag) for tag in header.split(",")]
        if header.strip() == "*" or version in tags:
            response = Response(status=304)
            response["ETag"] = mapping.etag(version)
            return response
        return None

    # --- listing -----------------------------------------------------------------------

    def list(self, request: Request) -> Response:
        return self.search(self.params())

    def search_request(self, request: Request) -> Response:
        """POST /Users/.search: the query in a SearchRequest body, kept out of URLs and logs (§3.4.3)."""
        return self.search(search_params(self.body()))

    def filter_text(self, params: dict[str, Any]) -> str | None:
        """The filter with the client's dialect rewritten (and the rewrites counted); None without one."""
        text = params.get("filter")
        if text in (None, ""):
            return None
        text, fired = dialects.normalize_filter(str(text), self.resource_type)
        if fired:
            dialect_rewrites_record(client=self.client, names=fired)
        return text

    def filtered(self, params: dict[str, Any], projection: Projection | None = None) -> QuerySet[Any]:
        return self.filtered_by(self.filter_text(params), projection)

    def filtered_by(self, text: str | None, projection: Projection | None = None) -> QuerySet[Any]:
        queryset = self.queryset(projection)
        if text is not None:
            queryset = queryset.filter(compile_filter(text, self.resource_type))
        return queryset

    def unique_match(self, node: Node, projection: Projection) -> list[Any] | None:
        """The rows of a filter that names one resource by a unique attribute; None for other filters."""
        return None

    def search(self, params: dict[str, Any]) -> Response:
        projection = self.projection(params)
        text = self.filter_text(params)
        if text is not None and "cursor" not in params and not params.get("sortby"):
            # `userName eq "…"`, which provisioning clients send before creating each user: at most
            # one row, found by a lookup compiled once per process rather than a query built per
            # request. Anything else takes the general path below.
            page = Page.from_params(params)
            node = _parsed(text) if page.start_index == 1 and page.count else None
            rows = self.unique_match(node, projection) if node is not None else None
            if rows is not None:
                return self.list_response(rows, projection, total=len(rows), start_index=1)
        queryset = self.filtered_by(text, projection)
        if "cursor" in params:
            return self.cursor_search(params, queryset, projection)
        page = Page.from_params(params)
        ordering = order_by(params.get("sortby"), params.get("sortorder"), self.resource_type)
        if text is None and not params.get("sortby") and page.offset < _DEEP_OFFSET:
            # Every resource in the default order (a client paging through the directory): the
            # query is always the same, compiled once per process, and so is its count.
            unfiltered = self.unfiltered_page(projection, page)
            if unfiltered is not None:
                rows, count_all = unfiltered
                total = len(rows) if page.offset == 0 and len(rows) < page.count else count_all()
                return self.list_response(rows, projection, total=total, start_index=page.start_index)
        rows = self.page_rows(queryset, ordering, page) if page.count else []
        if page.offset == 0 and len(rows) < page.count:
            total = len(rows)  # a short first page is the whole result: no COUNT needed
        else:
            total = queryset.count()
        return self.list_response(rows, projection, total=total, start_index=page.start_index)

    def list_response(
        self, rows: list[Any], projection: Projection, *, total: int, start_index: int
    ) -> Response:
        resources = [projection.apply(resource) for resource in self.render(rows, projection)]
        body = {
            "schemas": [LIST_RESPONSE],
            "totalResults": total,
            "itemsPerPage": len(resources),
            "startIndex": start_index,
            "Resources": resources,
        }
        return Response(body, content_type=SCIM_CONTENT_TYPE)

    def cursor_search(
        self, params: dict[str, Any], queryset: QuerySet[Any], projection: Projection
    ) -> Response:
        """RFC 9865: `cursor` (even empty) asks for cursor pages in the default order."""
        if params.get("startindex") not in (None, ""):
            raise ScimError("Use either cursor or startIndex, not both.", scim_type="invalidValue")
        if params.get("sortby") not in (None, ""):
            raise ScimError(
                "Cursor pages follow the server's default order; sortBy needs index pagination (startIndex).",
                scim_type="invalidValue",
            )
        token = params.get("cursor")
        if token is not None and not isinstance(token, str):
            raise ScimError("cursor must be a string.", scim_type="invalidCursor")
        count = Page.from_params(params).count
        scope = {"resource_type": self.resource_type.name, "filter_text": params.get("filter")}
        cursor = cursors.decode(token, **scope) if token else None
        total = queryset.count()
        result = (
            cursors.page(queryset, cursor, count, **scope) if count else cursors.CursorPage([], None, None)
        )
        resources = [projection.apply(resource) for resource in self.render(result.rows, projection)]
        body: dict[str, Any] = {
            "schemas": [LIST_RESPONSE],
            "totalResults": total,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
        if result.next_cursor:
            body["nextCursor"] = result.next_cursor
        if result.previous_cursor:
            body["previousCursor"] = result.previous_cursor
        return Response(body, content_type=SCIM_CONTENT_TYPE)

    def page_rows(self, queryset: QuerySet[Any], ordering: list[Any], page: Page) -> list[Any]:
        window = queryset.order_by(*ordering)[page.offset : page.offset + page.count]
        if page.offset < _DEEP_OFFSET:
            return list(window)
        # Deep pages: find the page's ids on the narrow (created, id) index first, then load only
        # those rows; OFFSET over the full rows (and their joins) would read every row skipped.
        ids = list(window.values_list("pk", flat=True))
        by_id = {row.pk: row for row in queryset.filter(pk__in=ids)}
        return [by_id[pk] for pk in ids if pk in by_id]

    # --- hooks for each resource type --------------------------------------------------

    def queryset(self, projection: Projection | None = None) -> QuerySet[Any]:
        """All resources of the type, loaded with what `projection` (when known) will render."""
        raise NotImplementedError

    def unfiltered_page(
        self, projection: Projection, page: Page
    ) -> tuple[list[Any], Callable[[], int]] | None:
        """A page of every resource in the default order, and how to count them all, without
        building either query (None: this type takes the general path)."""
        return None

    def render(self, rows: list[Any], projection: Projection) -> list[dict[str, Any]]:
        raise NotImplementedError


def _parsed(text: str) -> Node | None:
    """The filter's syntax tree, or None when it does not parse (the general path reports why)."""
    try:
        return parse_filter(text)
    except FilterSyntaxError:
        return None


def _version_of(tag: str) -> int | None:
    match = re.fullmatch(r'\s*(?:W/)?"?([0-9]{1,18})"?\s*', tag)
    return int(match.group(1)) if match else None


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ObjectNotFound(f"No resource with id {value!r}") from None


# --- Users --------------------------------------------------------------------------------


class UsersViewSet(ScimViewSet):
    resource_type = USER

    def queryset(self, projection: Projection | None = None) -> QuerySet[User]:
        return selectors.user_list(with_groups=projection is not None and projection.includes("groups"))

    def unfiltered_page(
        self, projection: Projection, page: Page
    ) -> tuple[list[User], Callable[[], int]] | None:
        with_groups = projection.includes("groups")
        rows = (
            selectors.user_window(offset=page.offset, limit=page.count, with_groups=with_groups)
            if page.count
            else []
        )
        return rows, selectors.user_total

    def render(self, rows: list[User], projection: Projection) -> list[dict[str, Any]]:
        with_groups = projection.includes("groups")
        # Rows loaded for this projection carry their groups; others (a root search) get one query.
        unloaded = [user.pk for user in rows if with_groups and not hasattr(user, "stored_groups")]
        groups = selectors.user_group_refs(user_ids=unloaded) if unloaded else {}
        return [
            mapping.user_to_scim(
                user,
                values=selectors.user_values(user),
                base_url=self.base_url,
                groups=(
                    [
                        mapping.GroupRef(*ref)
                        for ref in (
                            groups[user.pk] if user.pk in groups else selectors.user_groups_loaded(user)
                        )
                    ]
                    if with_groups
                    else None
                ),
                manager_display=getattr(user, "manager_display", None),
            )
            for user in rows
        ]

    def unique_match(self, node: Node, projection: Projection) -> list[Any] | None:
        if not (
            isinstance(node, Comparison)
            and node.op.lower() == "eq"
            and isinstance(node.value, str)
            and node.value  # `eq ""` means "has no userName": the general path handles it
        ):
            return None
        try:
            path = get_registry().resolve(USER, node.path)
        except UnknownAttribute:
            return None
        if path.is_extension or path.sub_attribute is not None or path.attribute.name != "userName":
            return None
        return selectors.users_by_user_name(user_name=node.value, with_groups=projection.includes("groups"))

    def _get(self, user_id: uuid.UUID, projection: Projection | None = None) -> User:
        return selectors.user_get(
            user_id=user_id, with_groups=projection is not None and projection.includes("groups")
        )

    def _respond(self, user_id: uuid.UUID, projection: Projection, status: int = 200) -> Response:
        user = self._get(user_id, projection)
        return self.resource_response(
            self.render([user], projection)[0], projection, status=status, version=user.version
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        projection = self.projection()
        user = self._get(_uuid(pk), projection)
        cached = self.not_modified(user.version)
        if cached is not None:
            return cached
        return self.resource_response(self.render([user], projection)[0], projection, version=user.version)

    def create(self, request: Request) -> Response:
        projection = self.projection()
        body = self.normalised(dialects.normalize_resource(self.body(), USER, method="POST"))
        data = mapping.user_from_scim(body, mode="create")
        fields = dict(data.fields)
        user_name = fields.pop("user_name", "")
        user = services.user_create(
            actor=self.actor, user_name=user_name, password=data.password, values=data.values, **fields
        )
        if user.manager_id is not None:
            return self._respond(user.pk, projection, status=201)  # the manager's name needs a read
        # Everything else the response shows was just written (a new user is in no group): render
        # it without reading it back.
        selectors.user_loaded(user, values=services.normalise_values(data.values))
        return self.resource_response(
            self.render([user], projection)[0], projection, status=201, version=user.version
        )

    def update(self, request: Request, pk: str) -> Response:
        projection = self.projection()
        user_id = _uuid(pk)
        body = self.normalised(dialects.normalize_resource(self.body(), USER, method="PUT", resource_id=pk))
        current = selectors.user_get(user_id=user_id)
        data = mapping.user_from_scim(body, mode="put", current_extensions=current.extensions)
        extra = {"password": data.password} if data.password_given else {}
        services.user_update(
            actor=self.actor,
            user_id=user_id,
            expected_version=self.expected_version(),
            values=data.values,
            **data.fields,
            **extra,
        )
        return self._respond(user_id, projection)

    def partial_update(self, request: Request, pk: str) -> Response:
        projection = self.projection()
        user_id = _uuid(pk)
        body = self.body()
        expected = self.expected_version()
        respond = scim_setting("USER_PATCH_RETURNS_RESOURCE") or projection.explicit
        with_groups = respond and projection.includes("groups")
        normalized, patched = _with_retries(
            lambda locked: self._patch_user(user_id, body, expected, locked=locked, with_groups=with_groups),
            lock_first=expected is not None,
        )
        self.normalised(normalized)
        if not respond:
            return Response(status=204)
        if patched is None:
            return self._respond(user_id, projection)
        return self.resource_response(
            self.render([patched], projection)[0], projection, version=patched.version
        )

    def _patch_user(
        self,
        user_id: uuid.UUID,
        body: dict[str, Any],
        expected: int | None,
        *,
        locked: bool,
        with_groups: bool,
    ) -> tuple[dialects.Normalized, User | None]:
        """One attempt; returns the user as written (None when only a read can tell, see user_as_written)."""
        user = selectors.user_get(user_id=user_id, for_update=locked, with_groups=with_groups)
        if expected is not None and expected != user.version:
            raise ScimError(f"The user is at version {user.version}, not {expected}.", status=412)
        current = mapping.user_to_scim(user, values=selectors.user_values(user), base_url=self.base_url)
        normalized = dialects.normalize_patch(body, USER, resource_id=str(user.pk))
        result = apply_patch(USER, current, normalized.body)
        before = mapping.user_from_scim(current, mode="patch")
        after = mapping.user_from_scim(result.resource, mode="patch")
        extra = {"password": after.password} if after.password_given else {}
        values = {kind: items for kind, items in after.values.items() if before.values.get(kind) != items}
        written = services.user_update(
            actor=self.actor,
            user_id=user_id,
            expected_version=user.version,
            values=values,
            read=user,
            **_changed(before.fields, after.fields),
            **extra,
        )
        # The write checked that nobody changed the user since it was read, so the read and the
        # write together are what a read now would return.
        as_written = selectors.user_as_written(
            read=user, written=written, replaced=services.normalise_values(values)
        )
        return normalized, as_written

    def destroy(self, request: Request, pk: str) -> Response:
        services.user_delete(actor=self.actor, user_id=_uuid(pk), expected_version=self.expected_version())
        return Response(status=204)


class MeViewSet(UsersViewSet):
    """/Me (RFC 7644 §3.11): the user the calling client is bound to, read and changed as /Users/{id}."""

    def _me(self) -> str:
        if self.client.user_id is None:
            raise ScimError(
                "This SCIM client is not bound to a directory user, so /Me has no subject "
                "(an operator can bind one on the client's admin page).",
                status=501,
            )
        return str(self.client.user_id)

    def me_retrieve(self, request: Request) -> Response:
        return self.retrieve(request, self._me())

    def me_update(self, request: Request) -> Response:
        return self.update(request, self._me())

    def me_partial_update(self, request: Request) -> Response:
        return self.partial_update(request, self._me())

    def me_unsupported(self, request: Request) -> Response:
        raise ScimError(
            "/Me supports GET, PUT and PATCH; create and delete users through /Users.", status=501
        )


# --- Groups -------------------------------------------------------------------------------


class GroupsViewSet(ScimViewSet):
    resource_type = GROUP

    def queryset(self, projection: Projection | None = None) -> QuerySet[Group]:
        return Group.objects.all()

    def render(self, rows: list[Group], projection: Projection) -> list[dict[str, Any]]:
        members = (
            selectors.group_member_refs(group_ids=[group.pk for group in rows])
            if projection.includes("members")
            else {}
        )
        return [
            mapping.group_to_scim(
                group,
                base_url=self.base_url,
                members=(
                    [mapping.MemberRef(*ref) for ref in members.get(group.pk, [])]
                    if projection.includes("members")
                    else None
                ),
            )
            for group in rows
        ]

    def _respond(self, group_id: uuid.UUID, projection: Projection, status: int = 200) -> Response:
        group = selectors.group_get(group_id=group_id)
        return self.resource_response(
            self.render([group], projection)[0], projection, status=status, version=group.version
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        projection = self.projection()
        group = selectors.group_get(group_id=_uuid(pk))
        cached = self.not_modified(group.version)
        if cached is not None:
            return cached
        return self.resource_response(self.render([group], projection)[0], projection, version=group.version)

    def create(self, request: Request) -> Response:
        projection = self.projection()
        body = self.normalised(dialects.normalize_resource(self.body(), GROUP, method="POST"))
        data = mapping.group_from_scim(body, mode="create")
        fields = dict(data.fields)
        display_name = fields.pop("display_name", "")
        user_ids, group_ids = _split_members(mapping.member_ids(data.members or []))
        group = services.group_create(
            actor=self.actor,
            display_name=display_name,
            member_user_ids=user_ids,
            member_group_ids=group_ids,
            **fields,
        )
        return self._respond(group.pk, projection, status=201)

    def update(self, request: Request, pk: str) -> Response:
        projection = self.projection()
        group_id = _uuid(pk)
        body = self.normalised(dialects.normalize_resource(self.body(), GROUP, method="PUT", resource_id=pk))
        current = selectors.group_get(group_id=group_id)
        data = mapping.group_from_scim(body, mode="put", current_extensions=current.extensions)
        with transaction.atomic():
            services.group_update(
                actor=self.actor, group_id=group_id, expected_version=self.expected_version(), **data.fields
            )
            _replace_members(self.actor, group_id, mapping.member_ids(data.members or []))
        return self._respond(group_id, projection)

    def partial_update(self, request: Request, pk: str) -> Response:
        projection = self.projection()
        group_id = _uuid(pk)
        body = self.body()
        expected = self.expected_version()
        normalized, version = _with_retries(
            lambda locked: self._patch_group(group_id, body, expected, locked=locked),
            lock_first=expected is not None,
        )
        self.normalised(normalized)
        if scim_setting("GROUP_PATCH_RETURNS_RESOURCE") or projection.explicit:
            return self._respond(group_id, projection)
        # No body, but the new version, so a client using If-Match needs no extra GET.
        response = Response(status=204)
        if version is None:
            version = selectors.group_version(group_id=group_id)
        if version is not None:
            response["ETag"] = mapping.etag(version)
        return response

    def _patch_group(
        self, group_id: uuid.UUID, body: dict[str, Any], expected: int | None, *, locked: bool
    ) -> tuple[dialects.Normalized, int | None]:
        """One attempt: attribute changes, then member changes, in one transaction.

        Returns the group's version after its last write when that write tells it (None when not).
        """
        group = selectors.group_get(group_id=group_id, for_update=locked)
        if expected is not None and expected != group.version:
            raise ScimError(f"The group is at version {group.version}, not {expected}.", status=412)
        current = mapping.group_to_scim(group, base_url=self.base_url)
        normalized = dialects.normalize_patch(body, GROUP, resource_id=str(group.pk))
        result = apply_patch(GROUP, current, normalized.body)
        before = mapping.group_from_scim(current, mode="patch")
        after = mapping.group_from_scim(result.resource, mode="patch")
        changes = _changed(before.fields, after.fields)
        delta = result.members
        # Each write returns the group's version after it, when it knows it.
        writes: list[Callable[[], int | None]] = []
        if changes:
            writes.append(
                lambda: (
                    services.group_update(
                        actor=self.actor, group_id=group_id, expected_version=group.version, **changes
                    ).version
                )
            )
        if delta.replace is not None:
            wanted = _member_refs(delta.replace)
            writes.append(lambda: _replace_members(self.actor, group_id, wanted))
        if delta.remove:
            removed = [_uuid_member(value) for value in delta.remove]
            writes.append(
                lambda: (
                    services.membership_remove(
                        actor=self.actor, group_id=group_id, user_ids=removed, group_ids=removed, read=group
                    ).version
                )
            )
        if delta.add:
            user_ids, group_ids, untyped = _typed_members(_member_refs(delta.add))
            writes.append(
                lambda: (
                    services.membership_add(
                        actor=self.actor,
                        group_id=group_id,
                        user_ids=user_ids,
                        group_ids=group_ids,
                        member_ids=untyped,
                        read=group,
                    ).version
                )
            )
        # A service call is a transaction of its own; several (or a replace, which reads then
        # writes) share one, so the PATCH lands whole or not at all.
        version: int | None = group.version
        with transaction.atomic() if len(writes) > 1 or delta.replace is not None else nullcontext():
            for write in writes:
                version = write()
        return normalized, version

    def destroy(self, request: Request, pk: str) -> Response:
        services.group_delete(actor=self.actor, group_id=_uuid(pk), expected_version=self.expected_version())
        return Response(status=204)


T = TypeVar("T")

# From this offset on, a page finds its ids on the narrow (created, id) index first (page_rows).
_DEEP_OFFSET = 1000

# How often a PATCH is read and applied optimistically before it takes a lock.
_OPTIMISTIC_ATTEMPTS = 2


def _with_retries(attempt: Callable[[bool], T], *, lock_first: bool = False) -> T:
    """Run a read-patch-write attempt until it lands.

    The first attempts read without locking and write only if nobody wrote the
    resource in between (the services check the version read); the last one
    locks the row first, in a transaction that also holds its writes, so a busy
    resource still gets every PATCH applied, one after another, and never a 412
    the client did not ask for. An unlocked attempt opens a transaction only for
    several writes: a single service call is one already.
    """
    # With If-Match, the version must be checked under the lock that the writes then hold.
    for _ in range(0 if lock_first else _OPTIMISTIC_ATTEMPTS):
        try:
            return attempt(False)
        except VersionMismatch:
            continue
    with transaction.atomic():
        return attempt(True)


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields a PATCH changed: passing back stored values would read as the client's choice of them."""
    return {name: value for name, value in after.items() if name not in before or before[name] != value}


def _member_refs(refs: list[Any]) -> list[tuple[uuid.UUID, str | None]]:
    return mapping.member_ids({"value": ref.value, "type": ref.type} for ref in refs)


def _uuid_member(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidValue(f"members.value must be a resource id, got {value!r}", field="members") from None


def _typed_members(
    members: list[tuple[uuid.UUID, str | None]],
) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID]]:
    """User ids, group ids, and the ids of members without a declared type."""
    users = [member for member, kind in members if kind and kind.lower() == "user"]
    groups = [member for member, kind in members if kind and kind.lower() == "group"]
    untyped = [member for member, kind in members if not kind or kind.lower() not in ("user", "group")]
    return users, groups, untyped


def _split_members(members: list[tuple[uuid.UUID, str | None]]) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """User ids and group ids; members without a declared type are looked up (one query)."""
    users, groups, untyped = _typed_members(members)
    if untyped:
        found_users, others = selectors.member_kinds(ids=untyped)
        users += found_users
        groups += others
    return users, groups


def _replace_members(actor: Actor, group_id: uuid.UUID, members: list[tuple[uuid.UUID, str | None]]) -> None:
    """Make the group's direct members exactly `members`: the one operation that reads the member list."""
    wanted_users, wanted_groups = _split_members(members)
    current_users, current_groups = selectors.group_member_ids(group_id=group_id)
    services.membership_remove(
        actor=actor,
        group_id=group_id,
        user_ids=sorted(current_users - set(wanted_users)),
        group_ids=sorted(current_groups - set(wanted_groups)),
    )
    services.membership_add(
        actor=actor,
        group_id=group_id,
        user_ids=[member for member in wanted_users if member not in current_users],
        group_ids=[member for member in wanted_groups if member not in current_groups],
    )


# --- discovery ------------------------------------------------------------------------------


class DiscoveryView(ScimAPIView):
    """Discovery documents need no token (RFC 7644 §4): they describe the server, not its data."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []

    def _inbound_source(self, request: Request) -> InboundSource | None:
        """The inbound source whose token came with the request, if one did (discovery needs none)."""
        try:
            found = ScimTokenAuthentication().authenticate(request)
        except AuthenticationFailed:
            return None
        if found is None:
            return None
        return InboundSource.objects.filter(client=found[0]).first()


_SEARCH_KEYS = (
    "attributes",
    "excludedAttributes",
    "filter",
    "sortBy",
    "sortOrder",
    "startIndex",
    "count",
    "cursor",
)


def search_params(body: dict[str, Any]) -> dict[str, Any]:
    """A SearchRequest body as the query parameters it stands for (keys matched ignoring case)."""
    schemas = next((value for key, value in body.items() if key.lower() == "schemas"), None)
    if schemas is not None and (not isinstance(schemas, list) or SEARCH_REQUEST not in schemas):
        raise ScimError(f"A search request's schemas must list {SEARCH_REQUEST}.", scim_type="invalidSyntax")
    known = {name.lower() for name in _SEARCH_KEYS} | {"schemas"}
    unknown = sorted(key for key in body if key.lower() not in known)
    if unknown:
        raise ScimError(
            f"Unknown search request parameter(s): {', '.join(unknown)}", scim_type="invalidSyntax"
        )
    params = {key.lower(): value for key, value in body.items() if key.lower() != "schemas"}
    for name in ("filter", "sortby", "sortorder"):
        if params.get(name) is not None and not isinstance(params[name], str):
            raise ScimError(f"{name} must be a string.", scim_type="invalidValue")
    for name in ("attributes", "excludedattributes"):
        value = params.get(name)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise ScimError(f"{name} must be a list of attribute names.", scim_type="invalidValue")
    return params


def _check_names_known(params: dict[str, Any]) -> None:
    """Each name in attributes / excludedAttributes must belong to at least one resource type."""
    registry = get_registry()
    for key in ("attributes", "excludedattributes"):
        raw = params.get(key)
        names = raw if isinstance(raw, list) else (raw or "").split(",")
        for name in (n.strip() for n in names if n.strip()):
            if not any(_resolves(rt, name) for rt in registry.resource_types.values()):
                raise ScimError(
                    f"'{name}' is not an attribute of any resource type", scim_type="invalidValue"
                )


def _resolves(resource_type: ResourceType, name: str) -> bool:
    try:
        get_registry().resolve(resource_type, name)
    except UnknownAttribute:
        return False
    return True


def _root_order(params: dict[str, Any], resource_type: ResourceType) -> list[Any]:
    """The sort for one type of a root search: sortBy where the type has it, else the default order."""
    sort_by = params.get("sortby")
    if sort_by and not _resolves(resource_type, sort_by):
        sort_by = None
    return order_by(sort_by, params.get("sortorder"), resource_type)


class SearchView(ScimAPIView):
    """POST /.search at the root: one query across Users and Groups (RFC 7644 §3.4.3).

    Users come first, then groups, each in its own order; a filter that names an
    attribute one type lacks simply matches none of that type.
    """

    read_only = True

    def post(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, dict):
            raise ScimError("The request body must be a JSON object.", scim_type="invalidSyntax")
        params = search_params(body)
        if "cursor" in params:
            raise ScimError(
                "Cursor pagination is per resource type: POST /Users/.search or /Groups/.search.",
                scim_type="invalidValue",
            )
        views = [
            view_class(request=request, format_kwarg=None) for view_class in (UsersViewSet, GroupsViewSet)
        ]
        querysets = []
        errors = []
        for view in views:
            try:
                querysets.append((view, view.filtered(params)))
            except (InvalidFilter, ScimError) as exc:
                errors.append(exc)
        if not querysets:
            raise errors[0]
        _check_names_known(params)
        if params.get("sortby") and not any(
            _resolves(view.resource_type, params["sortby"]) for view, _ in querysets
        ):
            raise ScimError(
                f"sortBy {params['sortby']!r} is not an attribute of any resource type.",
                scim_type="invalidValue",
            )
        page = Page.from_params(params)
        totals = [queryset.count() for _, queryset in querysets]
        resources: list[dict[str, Any]] = []
        offset, wanted = page.offset, page.count
        for (view, queryset), total in zip(querysets, totals, strict=True):
            if wanted <= 0:
                break
            if offset >= total:
                offset -= total
                continue
            projection = view.projection(params, lenient=True)
            ordering = _root_order(params, view.resource_type)
            rows = view.page_rows(queryset, ordering, Page(start_index=offset + 1, count=wanted))
            resources += [projection.apply(resource) for resource in view.render(rows, projection)]
            wanted -= len(rows)
            offset = 0
        body = {
            "schemas": [LIST_RESPONSE],
            "totalResults": sum(totals),
            "itemsPerPage": len(resources),
            "startIndex": page.start_index,
            "Resources": resources,
        }
        return Response(body, content_type=SCIM_CONTENT_TYPE)


class BulkView(ScimAPIView):
    """POST /Bulk (RFC 7644 §3.7); see scim_api.bulk."""

    def post(self, request: Request) -> Response:
        limit = scim_setting("BULK_MAX_PAYLOAD_SIZE")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise ScimError(f"A bulk request may be at most {limit} bytes.", status=413)
        operations, fail_on_errors = bulk.parse(request.data)
        return bulk.run(request, operations, fail_on_errors)


# The extension of /ServiceProviderConfig that advertises inbound provisioning's bulkUpload limits
# (RFC 7644 has no bulkUpload). Only a request carrying an inbound source's token gets it, with that
# source's limits, and its description in /Schemas: strict SCIM clients refuse attributes the RFC
# does not define in this resource.
INBOUND_CONFIG_SCHEMA = "urn:directory:params:scim:schemas:extension:inbound:1.0:ServiceProviderConfig"
INBOUND_CONFIG = Schema(
    INBOUND_CONFIG_SCHEMA,
    "InboundProvisioningConfig",
    "Limits of inbound provisioning (Entra-style API-driven bulkUpload) for the source whose token asks.",
    (
        Attribute(
            "bulkUpload",
            "complex",
            mutability="readOnly",
            description="The bulkUpload endpoints of the asking source and their limits.",
            sub_attributes=(
                Attribute("supported", "boolean", mutability="readOnly", description="Always true."),
                Attribute(
                    "endpoint",
                    "reference",
                    mutability="readOnly",
                    reference_types=("uri",),
                    description="POST a BulkRequest here; the source is found from the token.",
                ),
                Attribute(
                    "sourceEndpoint",
                    "reference",
                    mutability="readOnly",
                    reference_types=("uri",),
                    description="The same, naming the source in the URL.",
                ),
                Attribute(
                    "maxOperations",
                    "integer",
                    mutability="readOnly",
                    description="Most operations one request may carry.",
                ),
                Attribute(
                    "maxPayloadSize",
                    "integer",
                    mutability="readOnly",
                    description="Largest request body, in bytes.",
                ),
            ),
        ),
    ),
)


class ServiceProviderConfigView(DiscoveryView):
    def get(self, request: Request) -> Response:
        max_page = scim_setting("MAX_PAGE_SIZE")
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": f"{self.base_url}/ServiceProviderConfig",
            "patch": {"supported": True},
            "bulk": {
                "supported": True,
                "maxOperations": scim_setting("BULK_MAX_OPERATIONS"),
                "maxPayloadSize": scim_setting("BULK_MAX_PAYLOAD_SIZE"),
            },
            "filter": {"supported": True, "maxResults": max_page},
            "changePassword": {"supported": True},
            "sort": {"supported": True},
            "pagination": {
                "cursor": True,
                "index": True,
                "defaultPaginationMethod": "index",
                "defaultPageSize": scim_setting("DEFAULT_PAGE_SIZE"),
                "maxPageSize": max_page,
                "cursorTimeout": scim_setting("CURSOR_TIMEOUT"),
            },
            "etag": {"supported": True},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "A token issued to the SCIM client by the directory's operators.",
                    "primary": True,
                },
                {
                    "type": "oauth2",
                    "name": "OAuth 2.0 client credentials",
                    "description": "POST client_id and client_secret to /oauth/token (grant_type="
                    "client_credentials) for a bearer token that lives 60 to 360 minutes.",
                },
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{self.base_url}/ServiceProviderConfig",
            },
        }
        source = self._inbound_source(request)
        if source is not None:
            body["schemas"].append(INBOUND_CONFIG_SCHEMA)
            body[INBOUND_CONFIG_SCHEMA] = {
                "bulkUpload": {
                    "supported": True,
                    "endpoint": f"{self.base_url}/bulkUpload",
                    "sourceEndpoint": f"{self.base_url}/inbound/{source.name}/bulkUpload",
                    "maxOperations": source.max_operations or scim_setting("INBOUND_MAX_OPERATIONS"),
                    "maxPayloadSize": scim_setting("INBOUND_MAX_PAYLOAD_SIZE"),
                }
            }
        return Response(body, content_type=SCIM_CONTENT_TYPE)


def _list_response(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


class ResourceTypesView(DiscoveryView):
    def get(self, request: Request, name: str | None = None) -> Response:
        registry = get_registry()
        if name is None:
            documents = [rt.to_scim(self.base_url) for rt in registry.resource_types.values()]
            return Response(_list_response(documents), content_type=SCIM_CONTENT_TYPE)
        for resource_type in registry.resource_types.values():
            if resource_type.name.lower() == name.lower():
                return Response(resource_type.to_scim(self.base_url), content_type=SCIM_CONTENT_TYPE)
        raise ScimError(f"No resource type {name!r}", status=404)


class SchemasView(DiscoveryView):
    def get(self, request: Request, schema_id: str | None = None) -> Response:
        registry = get_registry()
        schemas = list(registry.schemas.values())
        if self._inbound_source(request) is not None:
            schemas.append(INBOUND_CONFIG)
        if schema_id is None:
            documents = [schema.to_scim(self.base_url) for schema in schemas]
            return Response(_list_response(documents), content_type=SCIM_CONTENT_TYPE)
        schema = next((schema for schema in schemas if schema.id.lower() == schema_id.lower()), None)
        if schema is None:
            raise ScimError(f"No schema {schema_id!r}", status=404)
        return Response(schema.to_scim(self.base_url), content_type=SCIM_CONTENT_TYPE)


__all__ = [
    "GroupsViewSet",
    "ResourceTypesView",
    "SchemasView",
    "ServiceProviderConfigView",
    "UsersViewSet",
]
