from typing import Any

from django.apps import AppConfig
from django.db.models import CharField, TextField
from django.db.models.functions import Lower
from django.db.models.signals import post_migrate


def _sync_roles(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    # Permissions of models added since the last migrate join the roles that should hold them.
    from directory.roles import roles_sync_installed

    if using == "default":
        roles_sync_installed()


class DirectoryConfig(AppConfig):
    name = "directory"
    verbose_name = "Directory"

    def ready(self) -> None:
        # `field__lower=...` compiles to LOWER(field) = ..., which is what the
        # case-insensitive unique indexes are built on; Django's own `iexact`
        # uses UPPER() on PostgreSQL and would not use them.
        CharField.register_lookup(Lower)
        TextField.register_lookup(Lower)
        from directory import json_codec, pg_timestamps

        json_codec.install()
        pg_timestamps.install()
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="directory.sync_roles")
