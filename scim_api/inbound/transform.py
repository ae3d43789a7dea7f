"""An inbound record → what the directory should hold for that person, as pure functions.

The source's configuration is compiled once per job (`compile_source_config`);
each record then gives its key (`record_key`), whether it is in scope, and a
`Desired` state: the directory attributes it sets, the manager's key, and its
effective dates. Attribute values go through the SCIM server's own mapping
(scim_api.mapping.user_from_scim), so a record is validated exactly as a POST
/Users body would be; attributes the record does not carry are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from directory import extensions
from directory.columns import ENTERPRISE_USER_URN, NAME_COLUMNS
from directory.exceptions import InvalidValue
from directory.expressions import EvaluationError, Expression, ExpressionError
from directory.models import User
from scim_api.filter_parser import FilterSyntaxError, Node
from scim_api.inbound import paths
from scim_api.inbound.models import InboundSource
from scim_api.mapping import user_from_scim
from scim_api.schema import USER

# Core keys a record may carry that are not the person's attributes, or not the source's to set.
_IGNORED_CORE = frozenset({"id", "meta", "schemas", "groups", "password"})


class SourceConfigError(ValueError):
    """The source's configuration does not compile; the message names the field."""


@dataclass(frozen=True)
class CompiledSource:
    """A source's configuration, parsed once and applied to every record of a job."""

    source: InboundSource
    match: Expression
    mappings: tuple[tuple[str, Expression], ...]
    scope: Node | None
    hire_date: Expression | None
    termination_date: Expression | None
    # When records match on an extension attribute: its schema's URN and its definition.
    match_urn: str | None = None
    match_attribute: extensions.AttributeDefinition | None = None

    @property
    def match_column(self) -> str | None:
        """The User column records match on; None when they match on an extension attribute."""
        return MATCH_COLUMNS.get(self.source.match_target)

    @property
    def match_ignores_case(self) -> bool:
        if self.match_attribute is not None:
            return not self.match_attribute.case_exact
        return self.match_column == "user_name"

    def match_value(self, user: User) -> str:
        """The user's value of the matching attribute ("" when it has none)."""
        if self.match_attribute is not None:
            value = (user.extensions.get(self.match_urn or "") or {}).get(self.match_attribute.name)
            return "" if value is None else str(value)
        return str(getattr(user, self.match_column or ""))

    def matching(self, users: QuerySet[User], keys: list[str]) -> QuerySet[User]:
        """`users` whose matching attribute is one of `keys` (normalised as Context.norm does)."""
        if self.match_attribute is not None:
            # The expression the attribute's index covers (lower case unless caseExact).
            value = extensions.compared_expression(self.match_urn or "", self.match_attribute)
            return users.alias(_match=value).filter(_match__in=keys)
        if self.match_column == "user_name":
            return users.filter(user_name__lower__in=keys)
        return users.filter(**{f"{self.match_column}__in": keys})

    def matchable(self, users: QuerySet[User]) -> QuerySet[User]:
        """`users` that hold a value of the matching attribute (what the guard's percentages are of)."""
        if self.match_attribute is not None:
            value = extensions.value_expression(self.match_urn or "", self.match_attribute)
            return users.alias(_match=value).exclude(_match__isnull=True).exclude(_match="")
        return users.exclude(**{self.match_column or "": ""})


MATCH_COLUMNS = {
    InboundSource.MatchTarget.EMPLOYEE_NUMBER: "employee_number",
    InboundSource.MatchTarget.EXTERNAL_ID: "external_id",
    InboundSource.MatchTarget.USER_NAME: "user_name",
}


def compile_source_config(source: InboundSource) -> CompiledSource:
    """Parse every expression, target and filter of `source`; SourceConfigError names the first bad one."""

    def expression(text: str, label: str) -> Expression:
        try:
            return paths.compile_source(text)
        except ExpressionError as exc:
            raise SourceConfigError(f"{label}: {exc}") from None

    mappings: list[tuple[str, Expression]] = []
    if not isinstance(source.mappings, list):
        raise SourceConfigError('mappings: a list of {"target": ..., "source": ...} objects')
    for position, item in enumerate(source.mappings, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("target"), str):
            raise SourceConfigError(f'mapping {position}: needs a "target" and a "source"')
        if not isinstance(item.get("source"), str):
            raise SourceConfigError(f'mapping {position}: needs a "source" (a path or an expression)')
        try:
            target = paths.canonical_target(item["target"])
        except paths.PathError as exc:
            raise SourceConfigError(f"mapping {position}: {exc}") from None
        mappings.append((target, expression(item["source"], f"mapping {position} ({item['target']})")))
    scope = None
    if source.scoping_filter.strip():
        try:
            scope = paths.parse_filter(source.scoping_filter)
        except FilterSyntaxError as exc:
            raise SourceConfigError(f"scoping filter: {exc}") from None
    match_urn, match_attribute = None, None
    if source.match_target == InboundSource.MatchTarget.EXTENSION:
        match_urn, match_attribute = _match_extension(source.match_extension)
    return CompiledSource(
        match_urn=match_urn,
        match_attribute=match_attribute,
        source=source,
        match=expression(source.match_source, "match source"),
        mappings=tuple(mappings),
        scope=scope,
        hire_date=expression(source.hire_date_source, "hire date") if source.hire_date_source else None,
        termination_date=(
            expression(source.termination_date_source, "termination date")
            if source.termination_date_source
            else None
        ),
    )


def _match_extension(path: str) -> tuple[str, extensions.AttributeDefinition]:
    """The URN and definition of the extension attribute `path` names, if records can match on it."""
    urn, _, name = path.strip().rpartition(":")
    schema = extensions.definitions().schema(urn, "user") if urn else None
    attribute = schema.attribute(name) if schema is not None else None
    if schema is None or attribute is None:
        raise SourceConfigError(
            f"match extension attribute: {path!r} is no attribute of a User extension schema defined "
            "here (write it as urn:...:User:attributeName)"
        )
    if attribute.multi_valued or attribute.type not in ("string", "reference"):
        raise SourceConfigError(
            f"match extension attribute: {path!r} must be a single-valued string attribute"
        )
    return schema.urn, attribute


def _evaluate(expression: Expression, record: Mapping[str, Any], label: str) -> Any:
    try:
        return expression.evaluate(paths.resolver(record))
    except EvaluationError as exc:
        raise InvalidValue(f"{label}: {exc}", field=label) from None


def record_key(config: CompiledSource, record: Mapping[str, Any]) -> str:
    """The record's matching value ("" when it has none)."""
    try:
        value = _evaluate(config.match, record, "match source")
    except InvalidValue:
        return ""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or isinstance(value, bool):
        return ""
    return str(value).strip()[:255]


def in_scope(config: CompiledSource, record: Mapping[str, Any]) -> bool:
    return config.scope is None or paths.matches(config.scope, record)


def mapped_record(config: CompiledSource, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as a SCIM User of directory attributes: standard ones taken over, then the mappings."""
    mapped: dict[str, Any] = {}
    if config.source.map_standard_attributes:
        known = extensions.definitions()
        for key, value in record.items():
            if not isinstance(key, str):
                continue
            lowered = key.lower()
            if lowered.startswith("urn:"):
                if lowered == ENTERPRISE_USER_URN.lower() or known.schema(key, "user") is not None:
                    mapped[key] = paths.deep_copy(value) if isinstance(value, dict) else value
                continue
            if lowered in _IGNORED_CORE:
                continue
            if USER.schema.attribute(key) is not None or lowered == "externalid":
                mapped[key] = value
    for target, expression in config.mappings:
        value = _evaluate(expression, record, target)
        if value is None:
            continue
        if isinstance(value, list) and not _takes_list(target):
            value = value[0] if value else None
            if value is None:
                continue
        paths.set_path(mapped, target, value)
    return mapped


def _takes_list(target: str) -> bool:
    if not target.lower().startswith("urn:") or target.startswith(ENTERPRISE_USER_URN):
        return False
    urn, _, name = target.rpartition(":")
    schema = extensions.definitions().schema(urn, "user")
    attribute = schema.attribute(name) if schema is not None else None
    return attribute is not None and attribute.multi_valued


@dataclass
class Desired:
    """What a record asks of the directory. Absent things (None, missing keys) are left as they are."""

    # Model field → value, as services.user_create / user_update take them (`active` included).
    fields: dict[str, Any] = field(default_factory=dict)
    # Multi-valued attribute kind → its elements of the types the record names.
    values: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Operator-defined extension URN → {attribute: value} for the attributes the record names.
    extensions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The manager's key; "" clears the manager, None leaves it.
    manager_key: str | None = None
    hire_date: datetime | None = None
    termination_date: datetime | None = None
    # The source maps a termination date and this record has none: a pending future leave is off.
    termination_cleared: bool = False
    # The record's own value of the matching attribute, when it differs from its key (the key wins).
    conflicting_match_value: str | None = None

    @property
    def active(self) -> bool | None:
        value = self.fields.get("active")
        return value if isinstance(value, bool) else None


def desired_state(
    config: CompiledSource,
    record: Mapping[str, Any],
    *,
    key: str,
    current_extensions: Mapping[str, Any] | None = None,
) -> Desired:
    """A record's Desired state; InvalidValue / ScimError when it does not validate.

    `current_extensions` (the matched user's) lets a record name some attributes
    of an extension schema and keep the others, required schemas included.
    """
    mapped = mapped_record(config, record)
    desired = Desired()
    enterprise_key = next((k for k in mapped if k.lower() == ENTERPRISE_USER_URN.lower()), None)
    if enterprise_key is not None and isinstance(mapped[enterprise_key], dict):
        enterprise = mapped[enterprise_key]
        manager_name = next((k for k in enterprise if k.lower() == "manager"), None)
        if manager_name is not None:
            desired.manager_key = _manager_key(enterprise.pop(manager_name))
    given_ext = _declared_extensions(mapped)
    if current_extensions:
        for urn, values in given_ext.items():
            mapped[urn] = {**(current_extensions.get(urn) or {}), **values}
        for schema in extensions.definitions().for_type("user"):
            if schema.required and schema.urn not in given_ext and current_extensions.get(schema.urn):
                mapped[schema.urn] = dict(current_extensions[schema.urn])
    scim = user_from_scim(mapped, mode="create", current_extensions=current_extensions)
    fields = dict(scim.fields)
    given_name_parts = _given_name_parts(mapped)
    for part, column in NAME_COLUMNS.items():
        if column in fields and part.lower() not in given_name_parts:
            del fields[column]  # user_from_scim fills every part of a `name` it sees
    stored_ext = fields.pop("extensions", None) or {}
    desired.extensions = {
        urn: stored_ext[urn] for urn in stored_ext if urn in given_ext or current_extensions
    }
    desired.fields = fields
    desired.values = {kind: items for kind, items in scim.values.items() if items}
    match_column = config.match_column
    if config.match_attribute is not None:
        # The key is the matching attribute's value: a different one in the record gives way to it.
        given = desired.extensions.get(config.match_urn or "") or {}
        own = given.get(config.match_attribute.name)
        if own not in (None, "") and key:
            given[config.match_attribute.name] = key
    else:
        own = fields.pop(match_column or "", None)
    if (
        own not in (None, "")
        and key
        and (str(own).lower() != key.lower() if config.match_ignores_case else own != key)
    ):
        desired.conflicting_match_value = own
    if config.hire_date is not None:
        desired.hire_date = _date(_evaluate(config.hire_date, record, "hire date"), "hire date")
    if config.termination_date is not None:
        desired.termination_date = _date(
            _evaluate(config.termination_date, record, "termination date"), "termination date"
        )
        desired.termination_cleared = desired.termination_date is None
    return desired


def _declared_extensions(mapped: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The operator-defined extension objects in `mapped`, under canonical URNs and attribute names."""
    known = extensions.definitions()
    found: dict[str, dict[str, Any]] = {}
    for key in list(mapped):
        schema = known.schema(key, "user") if key.lower().startswith("urn:") else None
        if schema is None:
            continue
        raw = mapped.pop(key)
        if not isinstance(raw, dict):
            raise InvalidValue(f"{schema.urn} must be an object of its attributes", field=schema.urn)
        values = {}
        for name, value in raw.items():
            attribute = schema.attribute(name) if isinstance(name, str) else None
            values[attribute.name if attribute is not None else name] = value
        found[schema.urn] = values
        mapped[schema.urn] = values
    return found


def _given_name_parts(mapped: Mapping[str, Any]) -> set[str]:
    name = next((value for key, value in mapped.items() if key.lower() == "name"), None)
    return {key.lower() for key in name} if isinstance(name, dict) else set()


def _manager_key(value: Any) -> str:
    if isinstance(value, dict):
        value = next((item for key, item in value.items() if key.lower() == "value"), None)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidValue("manager.value must be the manager's key (their externalId)", field="manager")
    return str(value).strip()


def _date(value: Any, label: str) -> datetime | None:
    """A date or date-time value (ISO 8601); a date alone is midnight UTC."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    text = str(value).strip()
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime.combine(day, time(), tzinfo=UTC) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidValue(
            f"{label} {text!r} is not a date (use ISO 8601: 2025-07-01 or 2025-07-01T00:00:00Z)"
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def staged_leaver(config: CompiledSource, record: Mapping[str, Any], now: datetime) -> bool:
    """Whether a staged record reads as a leaver: what the guard counts.

    Inactive, or carrying a termination date: past (a leaver now) or future (a
    disable scheduled for the day, which the guard counts when it is decided).
    """
    try:
        if any(target == "active" for target, _ in config.mappings):
            active = paths.resolve(mapped_record(config, record), "active")
        else:
            # The usual case, without building the whole mapped record: `active` as sent.
            active = paths.resolve(record, "active") if config.source.map_standard_attributes else None
        if active is False:
            return True
        if config.termination_date is not None:
            ends = _date(_evaluate(config.termination_date, record, "termination date"), "termination date")
            return ends is not None
    except (InvalidValue, ValueError):
        return False
    return False


def staged_manager_key(config: CompiledSource, record: Mapping[str, Any]) -> str:
    """The manager's key a staged record names ("" for none): jobs naming each other's people wait."""
    try:
        if any(target.endswith(":manager") for target, _ in config.mappings):
            value = paths.resolve(mapped_record(config, record), f"{ENTERPRISE_USER_URN}:manager")
        elif config.source.map_standard_attributes:
            value = paths.resolve(record, f"{ENTERPRISE_USER_URN}:manager")
        else:
            return ""
        return _manager_key(value)[:255]
    except (InvalidValue, ValueError):
        return ""
