"""application/scim+json in and out; application/json accepted as an alias, as RFC 7644 §3.1 allows."""

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request


class ScimJSONRenderer(JSONRenderer):
    media_type = "application/scim+json"
    charset = None


class ScimJSONParser(JSONParser):
    media_type = "application/scim+json"


class PlainJSONParser(JSONParser):
    """Also takes a body sent with no Content-Type at all, which some scripts do."""

    media_type = "application/json"


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
