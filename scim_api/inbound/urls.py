"""Inbound provisioning under /scim/v2/, included before the SCIM server's URLs (they end in a catch-all)."""

from django.urls import re_path

from scim_api.inbound import views
from scim_api.urls import _any_case

app_name = "scim-inbound"

SOURCE = r"(?P<source>[-a-zA-Z0-9_]+)"

urlpatterns = [
    re_path(rf"^{_any_case('bulkUpload')}/?$", views.BulkUploadView.as_view(), name="bulk-upload"),
    re_path(
        rf"^{_any_case('inbound')}/{SOURCE}/{_any_case('bulkUpload')}/?$",
        views.BulkUploadView.as_view(),
        name="source-bulk-upload",
    ),
    re_path(
        rf"^{_any_case('inbound')}/{SOURCE}/{_any_case('jobs')}/(?P<job_id>[^/]+)/?$",
        views.JobView.as_view(),
        name="job",
    ),
]
