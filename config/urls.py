from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from scim_api import oauth

admin.site.site_header = "Identity directory"
admin.site.site_title = "Identity directory"
admin.site.index_title = "Directory administration"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("", include("observability.urls")),
    path("oauth/token", oauth.token, name="oauth-token"),
    # Inbound provisioning first: the SCIM server's URLconf ends in a catch-all 404.
    path("scim/v2/", include("scim_api.inbound.urls")),
    path("scim/v2/", include("scim_api.urls")),
]
