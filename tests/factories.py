"""factory_boy factories. They write rows directly: use them to arrange, and services to act."""

import factory

from directory.models import Group, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    user_name = factory.Sequence(lambda n: f"user{n}@example.com")
    given_name = factory.Faker("first_name")
    family_name = factory.Faker("last_name")
    display_name = factory.LazyAttribute(lambda user: f"{user.given_name} {user.family_name}")
    department = "Engineering"


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group

    display_name = factory.Sequence(lambda n: f"Group {n}")
