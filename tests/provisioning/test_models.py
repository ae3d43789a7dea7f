"""Provisioning invariants held by the database, shipped profiles, and credentials at rest."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from provisioning import crypto
from provisioning.models import Delivery, TargetAssignment, TargetLink, VendorProfile

pytestmark = pytest.mark.django_db


def test_shipped_profiles_cover_rfc_and_the_common_quirks():
    profiles = {profile.name: profile for profile in VendorProfile.objects.all()}
    assert profiles["RFC 7644 (strict)"].patch_style == "rfc"
    assert profiles["Entra-like"].patch_style == "entra"
    assert profiles["Groups hide members"].groups_return_members is False
    assert profiles["PUT for users"].user_update_method == "put"


def test_credentials_are_encrypted_at_rest(target_factory):
    target = target_factory(token="tok-abcdef-123456")

    with connection.cursor() as cursor:
        cursor.execute("SELECT encrypted_credentials FROM provisioning_target WHERE id = %s", [target.pk])
        stored = cursor.fetchone()[0]
    assert "tok-abcdef-123456" not in stored
    target.refresh_from_db()
    assert target.get_credentials() == {"token": "tok-abcdef-123456"}


def test_credentials_decrypt_after_key_rotation_and_not_without_the_old_key(target_factory, settings):
    settings.PROVISIONING = {"SECRET_KEYS": ["old-key"]}
    target = target_factory(token="t-1")
    settings.PROVISIONING = {"SECRET_KEYS": ["new-key", "old-key"]}
    assert target.get_credentials() == {"token": "t-1"}
    settings.PROVISIONING = {"SECRET_KEYS": ["new-key"]}
    with pytest.raises(crypto.CredentialsUnreadable, match="cannot be decrypted"):
        target.get_credentials()


def test_one_active_delivery_per_target_and_object(target_factory):
    target = target_factory()
    object_id = uuid.uuid4()
    Delivery.objects.create(target=target, object_type="user", object_id=object_id)
    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.create(target=target, object_type="user", object_id=object_id, state="held")
    # Finished deliveries do not count: history accumulates beside the one active row.
    Delivery.objects.create(target=target, object_type="user", object_id=object_id, state="done")
    Delivery.objects.create(target=target, object_type="user", object_id=object_id, state="failed")


def test_a_running_delivery_needs_a_lease(target_factory):
    target = target_factory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.create(target=target, object_type="user", object_id=uuid.uuid4(), state="running")


def test_one_link_per_target_and_object(target_factory):
    target = target_factory()
    object_id = uuid.uuid4()
    TargetLink.objects.create(target=target, object_type="user", object_id=object_id, remote_id="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        TargetLink.objects.create(target=target, object_type="user", object_id=object_id, remote_id="b")


def test_an_assignment_names_exactly_one_object(target_factory, user_factory, group_factory):
    target = target_factory()
    with pytest.raises(IntegrityError), transaction.atomic():
        TargetAssignment.objects.create(target=target, user=user_factory(), group=group_factory())
    with pytest.raises(IntegrityError), transaction.atomic():
        TargetAssignment.objects.create(target=target)


def test_profile_needs_a_positive_operation_limit():
    with pytest.raises(IntegrityError), transaction.atomic():
        VendorProfile.objects.create(name="zero", max_patch_operations=0)
