"""Reads shared by the front doors (SCIM API, admin) and provisioning."""

import uuid

from django.db.models import Count, QuerySet

from directory import membership_sql
from directory.exceptions import ObjectNotFound
from directory.models import Group, Membership, User


def user_list() -> QuerySet[User]:
    """All users, with their multi-valued attributes prefetched (one query per page)."""
    return User.objects.with_values().select_related("manager").order_by("created", "id")


def user_get(*, user_id: uuid.UUID | str) -> User:
    try:
        return user_list().get(pk=user_id)
    except (User.DoesNotExist, ValueError, TypeError):
        raise ObjectNotFound(f"User {user_id} not found") from None


def user_groups(*, user_id: uuid.UUID) -> QuerySet[Group]:
    """The groups a user is a direct member of."""
    return Group.objects.filter(memberships__member_user_id=user_id).order_by("display_name")


def group_list(*, with_member_count: bool = False) -> QuerySet[Group]:
    groups = Group.objects.order_by("created", "id")
    if with_member_count:
        groups = groups.annotate(member_count=Count("memberships"))
    return groups


def group_get(*, group_id: uuid.UUID | str) -> Group:
    try:
        return Group.objects.get(pk=group_id)
    except (Group.DoesNotExist, ValueError, TypeError):
        raise ObjectNotFound(f"Group {group_id} not found") from None


def group_members(*, group_id: uuid.UUID) -> QuerySet[Membership]:
    """A group's direct members, users and groups, with the member rows joined in."""
    return (
        Membership.objects.filter(group_id=group_id)
        .select_related("member_user", "member_group")
        .order_by("id")
    )


def group_nesting_would_cycle(*, group_id: uuid.UUID, member_group_id: uuid.UUID) -> bool:
    """Whether nesting `member_group_id` inside `group_id` would make a group contain itself."""
    return group_id == member_group_id or membership_sql.nested_group_reaches(
        start_ids=[member_group_id], target_id=group_id
    )
