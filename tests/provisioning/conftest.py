import pytest

from provisioning.models import Target, VendorProfile


@pytest.fixture
def rfc_profile(db) -> VendorProfile:  # type: ignore[no-untyped-def]
    return VendorProfile.objects.get(name="RFC 7644 (strict)")


@pytest.fixture
def target_factory(rfc_profile):  # type: ignore[no-untyped-def]
    def make(**fields) -> Target:  # type: ignore[no-untyped-def]
        token = fields.pop("token", "downstream-token")
        fields.setdefault("name", f"target-{Target.objects.count() + 1}")
        fields.setdefault("base_url", "http://127.0.0.1:9/scim/v2")
        fields.setdefault("profile", rfc_profile)
        fields.setdefault("scope", Target.Scope.ALL)
        target = Target(**fields)
        target.set_credentials({"token": token})
        target.save()
        return target

    return make
