from django.apps import AppConfig
from django.db.models import CharField, TextField
from django.db.models.functions import Lower


class DirectoryConfig(AppConfig):
    name = "directory"
    verbose_name = "Directory"

    def ready(self) -> None:
        # `field__lower=...` compiles to LOWER(field) = ..., which is what the
        # case-insensitive unique indexes are built on; Django's own `iexact`
        # uses UPPER() on PostgreSQL and would not use them.
        CharField.register_lookup(Lower)
        TextField.register_lookup(Lower)
