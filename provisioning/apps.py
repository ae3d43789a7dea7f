from django.apps import AppConfig


class ProvisioningConfig(AppConfig):
    name = "provisioning"
    verbose_name = "Outbound provisioning"

    def ready(self) -> None:
        from provisioning import metrics  # noqa: F401  (registers its scrape-time gauges)
