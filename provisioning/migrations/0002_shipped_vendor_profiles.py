from django.db import migrations

# The profiles every installation starts with: a strict RFC 7644 server and the
# common quirks. Operators add their own in the admin; these are ordinary rows.
PROFILES = [
    {
        "name": "RFC 7644 (strict)",
        "description": "A server that follows RFC 7643/7644: PATCH with lower-case ops, members removed "
        'by a value filter path (members[value eq "id"]), GET /Groups returns members.',
        "patch_style": "rfc",
        "groups_return_members": True,
        "max_patch_operations": 100,
        "user_update_method": "patch",
        "group_update_method": "patch",
        "soft_delete": "delete",
        "filterable_attributes": [],
    },
    {
        "name": "Entra-like",
        "description": "A server built for Microsoft Entra's provisioning service: capitalised PATCH ops "
        '("Add", "Replace", "Remove"), members removed with a value list on path "members", at most '
        "1,000 member changes per request, leavers disabled with active=false.",
        "patch_style": "entra",
        "groups_return_members": True,
        "max_patch_operations": 1000,
        "user_update_method": "patch",
        "group_update_method": "patch",
        "soft_delete": "active_false",
        "filterable_attributes": ["userName", "externalId", "displayName", "id"],
    },
    {
        "name": "Groups hide members",
        "description": "A server whose GET /Groups never returns members (AWS IAM Identity Center): "
        "membership is diffed against what was last written, never against what GET returns.",
        "patch_style": "rfc",
        "groups_return_members": False,
        "max_patch_operations": 100,
        "user_update_method": "patch",
        "group_update_method": "patch",
        "soft_delete": "delete",
        "filterable_attributes": ["userName", "externalId", "displayName", "id"],
    },
    {
        "name": "PUT for users",
        "description": "A server that does not take PATCH on users: every user update is a PUT of the "
        "whole resource; groups are still patched.",
        "patch_style": "rfc",
        "groups_return_members": True,
        "max_patch_operations": 100,
        "user_update_method": "put",
        "group_update_method": "patch",
        "soft_delete": "delete",
        "filterable_attributes": [],
    },
]


def forward(apps, schema_editor):
    VendorProfile = apps.get_model("provisioning", "VendorProfile")
    for profile in PROFILES:
        VendorProfile.objects.update_or_create(name=profile["name"], defaults=profile)


class Migration(migrations.Migration):
    dependencies = [
        ("provisioning", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
