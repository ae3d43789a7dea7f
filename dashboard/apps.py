from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The operators' dashboard: reads every app's selectors, owns no models, is imported by none."""

    name = "dashboard"
