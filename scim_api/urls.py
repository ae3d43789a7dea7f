"""SCIM 2.0 endpoints, mounted at /scim/v2/. The resources arrive with the SCIM service provider work."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
