"""Operator roles and the audit of operator actions outside the directory's own objects.

The role groups are created here; their permissions are set after migrate (directory.apps' post_migrate
hook), once every model's permissions exist, and at once on a database that already has them.
Audit entries get an `object_key` for objects not keyed by a UUID (a target, a sign-in's username);
widening a varchar and dropping NOT NULL rewrite no rows on PostgreSQL.
"""

from django.db import migrations, models


def create_roles(apps, schema_editor):
    from directory.roles import roles_sync

    roles_sync(group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("directory", "0002_extension_schemas"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.AddField(
            model_name="auditentry",
            name="object_key",
            field=models.CharField(blank=True, db_default="", default="", max_length=64),
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="object_id",
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="object_type",
            field=models.CharField(
                choices=[
                    ("user", "User"),
                    ("group", "Group"),
                    ("schema", "extension schema"),
                    ("operator", "operator sign-in"),
                    ("target", "provisioning target"),
                    ("scimclient", "SCIM client"),
                    ("inboundsource", "inbound source"),
                ],
                max_length=32,
            ),
        ),
    ]
