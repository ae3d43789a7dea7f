"""application/scim+json in and out; application/json accepted as an alias, as RFC 7644 §3.1 allows."""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request

from scim_api.exceptions import ScimError
from scim_api.filter_parser import is_storable_text


class ScimJSONRenderer(JSONRenderer):
    media_type = "application/scim+json"
    charset = None


class ScimJSONParser(JSONParser):
    """JSON that PostgreSQL can store: every string free of NUL and of unpaired surrogates."""

    media_type = "application/scim+json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The JSON is nested too deeply.") from None
        _check_text(data)
        return data


class PlainJSONParser(ScimJSONParser):
    """Also takes a body sent with no Content-Type at all, which some scripts do."""

    media_type = "application/json"


def _check_text(data: Any) -> None:
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                pending.append(key)
                pending.append(value)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and not is_storable_text(item):
            raise ScimError(
                "A string in the body holds a NUL character or an unpaired surrogate.",
                scim_type="invalidValue",
            )


class AlwaysScimNegotiation(BaseContentNegotiation):
    """Answer in SCIM JSON whatever the Accept header says.

    Entra's own endpoint requires `Accept: application/json` and others send
    `*/*` or nothing; SCIM JSON is JSON, so one representation serves them all.
    """

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if not content_type and parsers:
            return parsers[-1]
        for parser in parsers:
            if content_type == parser.media_type:
                return parser
        return None

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> Any:
        renderer = renderers[0]
        return renderer, renderer.media_type
