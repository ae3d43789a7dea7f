"""SCIM 2.0 endpoints under /scim/v2/.

Paths match in any letter case (`/Users`, `/users`, as Entra's own API
spells them) and with or without a trailing slash.
"""

from django.urls import URLPattern, re_path

from scim_api import views
from scim_api.exceptions import not_found

collection = {"get": "list", "post": "create"}
member = {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"}

app_name = "scim"


def _any_case(word: str) -> str:
    # "Users" -> "[Uu][Ss][Ee][Rr][Ss]": an inline (?i) flag would make the URLconf unreversible.
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _route(word: str, view: object, name: str, *, tail: str = "") -> URLPattern:
    return re_path(rf"^{_any_case(word)}{tail}/?$", view, name=name)  # type: ignore[arg-type]


ONE = r"/(?P<{}>[^/]+)"

urlpatterns = [
    re_path(r"^\.search/?$", views.SearchView.as_view(), name="search"),
    _route(
        "Users", views.UsersViewSet.as_view({"post": "search_request"}), "users-search", tail=r"/\.search"
    ),
    _route(
        "Groups", views.GroupsViewSet.as_view({"post": "search_request"}), "groups-search", tail=r"/\.search"
    ),
    _route("Users", views.UsersViewSet.as_view(collection), "users"),
    _route("Users", views.UsersViewSet.as_view(member), "user", tail=ONE.format("pk")),
    _route(
        "Me",
        views.MeViewSet.as_view(
            {
                "get": "me_retrieve",
                "put": "me_update",
                "patch": "me_partial_update",
                "post": "me_unsupported",
                "delete": "me_unsupported",
            }
        ),
        "me",
    ),
    _route("Groups", views.GroupsViewSet.as_view(collection), "groups"),
    _route("Groups", views.GroupsViewSet.as_view(member), "group", tail=ONE.format("pk")),
    _route("Bulk", views.BulkView.as_view(), "bulk"),
    _route("ServiceProviderConfig", views.ServiceProviderConfigView.as_view(), "service-provider-config"),
    _route("ResourceTypes", views.ResourceTypesView.as_view(), "resource-types"),
    _route("ResourceTypes", views.ResourceTypesView.as_view(), "resource-type", tail=ONE.format("name")),
    _route("Schemas", views.SchemasView.as_view(), "schemas"),
    _route("Schemas", views.SchemasView.as_view(), "schema", tail=ONE.format("schema_id")),
    re_path(r"^.*$", not_found, name="not-found"),
]
