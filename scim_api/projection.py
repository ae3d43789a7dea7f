"""`attributes` and `excludedAttributes` (RFC 7644 §3.9), driven by each attribute's `returned` rule.

The projection is decided before loading, so a request that leaves out
`members` or `groups` never loads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from scim_api.exceptions import ScimError
from scim_api.schema import COMMON_SCHEMA, AttributePath, ResourceType, UnknownAttribute, get_registry


def _paths(raw: str | list[str] | None, resource_type: ResourceType, *, lenient: bool) -> list[AttributePath]:
    if raw is None:
        return []
    names = raw if isinstance(raw, list) else raw.split(",")
    paths = []
    for name in names:
        if not isinstance(name, str) or not name.strip() or name.strip().lower() == "schemas":
            continue  # schemas is always returned: naming it selects or excludes nothing
        try:
            paths.append(get_registry().resolve(resource_type, name.strip()))
        except UnknownAttribute as exc:
            if not lenient:
                raise ScimError(str(exc), scim_type="invalidValue") from None
    return paths


def json_copy(value: Any) -> Any:
    """A copy of JSON data (dicts, lists, scalars): copy.deepcopy's generality costs several times more."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


def _select(value: Any, subs: set[str] | None) -> Any:
    """`value` (a whole attribute) reduced to the sub-attributes `subs` (None: all of it)."""
    if subs is None:
        return json_copy(value)
    if isinstance(value, list):
        parts = [{k: v for k, v in item.items() if k in subs} for item in value if isinstance(item, dict)]
        return [part for part in parts if part]
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items() if k in subs}
    return None


def _returned_rules(resource_type: ResourceType) -> dict[tuple[str, str], str]:
    """{(extension URN, attribute name): returned} for extension attributes not returned by default."""
    return {
        (schema.id, attribute.name): attribute.returned
        for schema, _ in resource_type.extensions
        for attribute in schema.attributes
        if attribute.returned != "default"
    }


def _key(path: AttributePath) -> tuple[str | None, str]:
    """Where a top-level attribute sits in the JSON: (extension URN or None, attribute name)."""
    return (path.schema.id if path.is_extension else None, path.attribute.name)


@dataclass(frozen=True)
class Projection:
    resource_type: ResourceType
    attributes: tuple[AttributePath, ...] = ()
    excluded: tuple[AttributePath, ...] = ()
    # A selection was asked for, even if none of its names belong to this type (a root search).
    selected: bool = False

    @classmethod
    def from_params(
        cls,
        resource_type: ResourceType,
        attributes: str | list[str] | None,
        excluded: str | list[str] | None,
        *,
        lenient: bool = False,
    ) -> Projection:
        """`lenient` skips names the type lacks: a root search names attributes of several types."""
        included = _paths(attributes, resource_type, lenient=lenient)
        left_out = _paths(excluded, resource_type, lenient=lenient)
        if attributes and excluded:
            raise ScimError(
                "Use either attributes or excludedAttributes, not both.", scim_type="invalidSyntax"
            )
        names = attributes if isinstance(attributes, list) else (attributes or "").split(",")
        selected = any(isinstance(name, str) and name.strip() for name in names)
        return cls(resource_type, tuple(included), tuple(left_out), selected=selected)

    @property
    def explicit(self) -> bool:
        """Whether the client chose attributes (a PATCH then answers with the resource)."""
        return self.selected

    def includes(self, name: str) -> bool:
        """Whether the top-level core attribute `name` (e.g. "members", "groups") will be returned."""
        attribute = self.resource_type.schema.attribute(name)
        if attribute is None:
            return False
        if attribute.returned == "never":
            return False
        if self.attributes:
            return any(
                path.attribute.name == attribute.name and not path.is_extension for path in self.attributes
            )
        if attribute.returned == "request":
            return False
        return not any(
            path.attribute.name == attribute.name and not path.is_extension and path.sub_attribute is None
            for path in self.excluded
        )

    @cached_property
    def _rules(self) -> dict[tuple[str, str], str]:
        # Once per request, not per resource of a page.
        return _returned_rules(self.resource_type)

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        rules = self._rules
        if not self.selected and not self.excluded and not rules:
            # Rendered representations never carry password: nothing to copy or remove.
            return resource
        result = json_copy(resource)
        result.pop("password", None)
        if self.selected:
            result = self._keep(result, always=[key for key, rule in rules.items() if rule == "always"])
        for path in self.excluded:
            self._drop(result, path)
        asked = {_key(path) for path in self.attributes}
        for (urn, name), rule in rules.items():
            if rule == "never" or (rule == "request" and (urn, name) not in asked):
                _drop_extension_attribute(result, urn, name)
        extension_ids = {ext.id for ext, _ in self.resource_type.extensions}
        result["schemas"] = [
            schema
            for schema in resource.get("schemas", [])
            if schema not in extension_ids or schema in result
        ]
        return result

    def _keep(self, resource: dict[str, Any], *, always: list[tuple[str, str]]) -> dict[str, Any]:
        # returned=always attributes survive any selection.
        kept: dict[str, Any] = {"schemas": resource.get("schemas", []), "id": resource.get("id")}
        # Whole attributes, and for the others the sub-attributes asked for, together: `emails.value,
        # emails.type` keeps both parts of each email.
        wanted: dict[tuple[str | None, str], set[str] | None] = {}
        for path in self.attributes:
            key = _key(path)
            if path.sub_attribute is None:
                wanted[key] = None
            elif key not in wanted or wanted[key] is not None:
                wanted.setdefault(key, set()).add(path.sub_attribute.name)  # type: ignore[union-attr]
        for key in always:
            wanted[key] = None
        for (urn, name), subs in wanted.items():
            source = resource.get(urn, {}) if urn else resource
            if name not in source:
                continue
            value = _select(source[name], subs)
            if value is not None:
                (kept.setdefault(urn, {}) if urn else kept)[name] = value
        return kept

    @staticmethod
    def _drop(resource: dict[str, Any], path: AttributePath) -> None:
        if path.attribute.returned == "always" or (
            path.schema is COMMON_SCHEMA and path.attribute.name == "id"
        ):
            return
        urn, name = _key(path)
        target = resource.get(urn) if urn else resource
        if not isinstance(target, dict) or name not in target:
            return
        if path.sub_attribute is None:
            del target[name]
        elif isinstance(target[name], list):
            for item in target[name]:
                item.pop(path.sub_attribute.name, None)
        elif isinstance(target[name], dict):
            target[name].pop(path.sub_attribute.name, None)
        if urn and not target:
            del resource[urn]


def _drop_extension_attribute(resource: dict[str, Any], urn: str, name: str) -> None:
    target = resource.get(urn)
    if not isinstance(target, dict) or name not in target:
        return
    del target[name]
    if not target:
        del resource[urn]
