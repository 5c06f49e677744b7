from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User

from viewer.models import AuditEvent, UserProfile
from viewer.roles import (
    ADMIN,
    AUDITOR,
    CLINICIAN,
    RECEPTIONIST,
    ProfileBackend,
    ProfileMissing,
    can,
    grant_role,
    letters_only,
    profile_of,
    requesting_user,
    role_of,
    roles_that_can,
)

pytestmark = pytest.mark.django_db


def make_user(username: str, role: str | None = None) -> User:
    user = User.objects.create_user(username, password="not-used-here-1")
    if role:
        grant_role(user, role)
    return user


def test_the_three_role_groups_exist_after_migrate() -> None:
    names = set(Group.objects.values_list("name", flat=True))
    assert {"Clinician", "Receptionist", "Auditor"} <= names


def test_a_clinician_can_search_view_download_and_print_but_not_book_or_audit() -> None:
    user = make_user("clin", CLINICIAN)
    assert role_of(user) == CLINICIAN
    assert [a for a in ("search", "view", "download", "print") if can(user, a)] == [
        "search",
        "view",
        "download",
        "print",
    ]
    assert not can(user, "book")
    assert not can(user, "audit")


def test_a_receptionist_can_book_and_print_letters_but_not_download() -> None:
    user = make_user("recep", RECEPTIONIST)
    assert can(user, "search") and can(user, "view") and can(user, "print") and can(user, "book")
    assert not can(user, "download")
    assert letters_only(user)


def test_an_auditor_can_only_use_the_audit_pages() -> None:
    user = make_user("aud", AUDITOR)
    assert can(user, "audit")
    assert not any(can(user, a) for a in ("search", "view", "download", "print", "book"))


def test_staff_without_a_role_group_are_admins_who_see_no_patient_data() -> None:
    user = make_user("staff")
    user.is_staff = user.is_superuser = True
    user.save()
    assert role_of(user) == ADMIN
    assert not can(user, "search")
    assert not can(user, "audit")


def test_anonymous_inactive_and_role_less_users_can_do_nothing() -> None:
    inactive = make_user("gone", CLINICIAN)
    inactive.is_active = False
    assert role_of(AnonymousUser()) is None
    assert role_of(inactive) is None
    assert role_of(make_user("nobody")) is None
    assert not can(AnonymousUser(), "search")


def test_granting_a_role_replaces_the_previous_one() -> None:
    user = make_user("mover", CLINICIAN)
    grant_role(user, AUDITOR)
    assert list(user.groups.values_list("name", flat=True)) == [AUDITOR]


def test_roles_that_can_lists_who_may_search() -> None:
    assert roles_that_can("search") == (CLINICIAN, RECEPTIONIST)
    assert roles_that_can("audit") == (AUDITOR,)


def test_the_requesting_user_carries_the_profile_and_a_uuid_not_the_username() -> None:
    user = make_user("dr.jones@example.org", CLINICIAN)
    profile = UserProfile.objects.create(
        user=user,
        title="Dr",
        given_names="Ann Marie",
        family_name="Jones",
        sds_user_id="900000000001",
        sds_role_profile_id="900000000101",
        organisation_ods_code="A12345",
        organisation_name="Test Surgery",
    )
    requester = requesting_user(user)
    assert requester.local_user_id == str(profile.local_id)
    assert str(uuid.UUID(requester.local_user_id)) == requester.local_user_id
    assert "jones" not in requester.local_user_id
    assert requester.family_name == "Jones"
    assert requester.given_names == ("Ann", "Marie")
    assert requester.prefixes == ("Dr",)
    assert (requester.sds_user_id, requester.sds_role_profile_id) == (
        "900000000001",
        "900000000101",
    )


def test_a_profile_without_sds_ids_sends_unk() -> None:
    user = make_user("nosds", CLINICIAN)
    UserProfile.objects.create(user=user, family_name="Smith", organisation_ods_code="A1")
    requester = requesting_user(user)
    assert (requester.sds_user_id, requester.sds_role_profile_id) == ("UNK", "UNK")


def test_a_user_without_a_profile_cannot_make_gp_connect_requests() -> None:
    with pytest.raises(ProfileMissing):
        requesting_user(make_user("noprofile", CLINICIAN))
    with pytest.raises(ProfileMissing):
        requesting_user(AnonymousUser())


def test_the_profile_id_stays_the_same_when_the_profile_is_edited() -> None:
    user = make_user("stable", CLINICIAN)
    profile = UserProfile.objects.create(user=user, family_name="Old", organisation_ods_code="A1")
    before = requesting_user(user).local_user_id
    profile.family_name = "New"
    profile.save()
    assert requesting_user(user).local_user_id == before
    assert not AuditEvent.objects.exists()


def test_a_signed_in_users_profile_and_role_come_with_them_in_one_query(
    django_assert_num_queries: Any,
) -> None:
    user = make_user("one.query", CLINICIAN)
    UserProfile.objects.create(user=user, family_name="Quick", organisation_ods_code="A1")
    with django_assert_num_queries(1):
        signed_in = ProfileBackend().get_user(user.pk)
        assert signed_in is not None
        assert requesting_user(signed_in).family_name == "Quick"
        assert profile_of(signed_in) is not None
        assert role_of(signed_in) == CLINICIAN and can(signed_in, "download")


def test_the_backend_gives_the_same_role_as_the_groups_say() -> None:
    both = make_user("both")
    both.groups.add(*Group.objects.filter(name__in=[RECEPTIONIST, CLINICIAN]))
    staff = make_user("staff")
    staff.is_staff = True
    staff.save()
    nobody = make_user("nobody")
    nobody.groups.add(Group.objects.create(name="Unrelated group"))
    for user in (both, staff, nobody, make_user("desk", RECEPTIONIST)):
        signed_in = ProfileBackend().get_user(user.pk)
        assert signed_in is not None
        assert role_of(signed_in) == role_of(User.objects.get(pk=user.pk))
    assert role_of(ProfileBackend().get_user(both.pk)) == CLINICIAN  # the first of ROLES
    assert role_of(ProfileBackend().get_user(staff.pk)) == ADMIN
    assert role_of(ProfileBackend().get_user(nobody.pk)) is None


def test_granting_a_role_to_a_signed_in_user_takes_effect_at_once() -> None:
    user = make_user("promoted", RECEPTIONIST)
    signed_in = ProfileBackend().get_user(user.pk)
    assert signed_in is not None and not can(signed_in, "download")
    grant_role(signed_in, CLINICIAN)
    assert can(signed_in, "download")


def test_an_inactive_user_is_not_signed_in_by_the_backend() -> None:
    user = make_user("gone", CLINICIAN)
    user.is_active = False
    user.save()
    assert ProfileBackend().get_user(user.pk) is None
    assert ProfileBackend().get_user(999_999) is None
