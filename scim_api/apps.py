from django.apps import AppConfig


class ScimApiConfig(AppConfig):
    name = "scim_api"
    verbose_name = "SCIM API"

    def ready(self) -> None:
        from scim_api.inbound import metrics  # noqa: F401  (registers its scrape-time gauge)
