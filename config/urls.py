from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from config import operators_admin  # noqa: F401 - audited operator pages, throttled sign-in
from dashboard.views import dashboard_view
from scim_api import oauth

admin.site.site_header = "Identity directory"
admin.site.site_title = "Identity directory"
admin.site.index_title = "Directory administration"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    # Before the admin's own URLs, whose catch-all would take it; admin_view requires a staff login.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="dashboard"),
    path("admin/", admin.site.urls),
    path("", include("observability.urls")),
    path("oauth/token", oauth.token, name="oauth-token"),
    # Inbound provisioning first: the SCIM server's URLconf ends in a catch-all 404.
    path("scim/v2/", include("scim_api.inbound.urls")),
    path("scim/v2/", include("scim_api.urls")),
]
