"""Roles (Django groups), what each may do, and who a user is to GP Connect.

A user acts in one role at a time, as with a smartcard's selected role: the first of
`ROLES` whose group they are in. Staff without a role group are "Admin": they can use
the Django admin but see no patient data. Check permissions here, in Python; templates
only show what a view already allowed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Case, OuterRef, Subquery, Value, When
from django.http import HttpRequest, HttpResponseBase

from gpconnect.config import RequestingUser
from viewer.models import UserProfile

CLINICIAN = "Clinician"
RECEPTIONIST = "Receptionist"
AUDITOR = "Auditor"
ADMIN = "Admin"

ROLES = (CLINICIAN, RECEPTIONIST, AUDITOR)  # the groups, in order of precedence

Action = Literal["search", "view", "download", "print", "book", "appointments", "audit"]

# Appointments: receptionists search free slots, book, amend and cancel ("book"). Clinicians
# see a patient's future appointments ("appointments") but change nothing: booking is the
# front desk's job, and one role making bookings keeps who booked what clear. Auditors
# see bookings only as audit events, never a patient's appointments.
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    CLINICIAN: frozenset({"search", "view", "download", "print", "appointments"}),
    # Receptionists see and print letters only: services filter by type (`letters_only`).
    RECEPTIONIST: frozenset({"search", "view", "print", "book", "appointments"}),
    AUDITOR: frozenset({"audit"}),
    ADMIN: frozenset(),
}

AnyUser = AbstractBaseUser | AnonymousUser

V = TypeVar("V", bound=Callable[..., HttpResponseBase])


class ProfileMissing(PermissionDenied):
    """Raised when a user has no profile, so GP Connect cannot be told who they are."""


_ROLE_MEMO = "_viewer_role"
_UNSET = object()


def role_of(user: AnyUser | None) -> str | None:
    """Return the role the user acts in, or None for anonymous and role-less users.

    Remembered on the user object, which lives for one request (or one task): a request
    asks several times, and each answer would otherwise be a query.
    """
    if not isinstance(user, User) or not user.is_active:
        return None
    remembered = getattr(user, _ROLE_MEMO, _UNSET)
    if remembered is not _UNSET:
        return cast(str | None, remembered)
    groups = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    role = next((r for r in ROLES if r in groups), ADMIN if user.is_staff else None)
    setattr(user, _ROLE_MEMO, role)
    return role


def can(user: AnyUser | None, action: Action) -> bool:
    """Return True if the user's role allows `action`."""
    role = role_of(user)
    return role is not None and action in ROLE_ACTIONS[role]


def roles_that_can(action: Action) -> tuple[str, ...]:
    """Return the roles allowed `action`, e.g. for `require_role(*roles_that_can("search"))`."""
    return tuple(role for role in ROLES if action in ROLE_ACTIONS[role])


def letters_only(user: AnyUser | None) -> bool:
    """Return True if the user may see letters but no other kind of document."""
    return role_of(user) == RECEPTIONIST


def require_role(*roles: str) -> Callable[[V], V]:
    """Decorate a view: anonymous users go to sign in, users without one of `roles` get 403.

    Each refusal is audited as `access_denied`.
    """

    def decorator(view: V) -> V:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if role_of(request.user) not in roles:
                from viewer import audit  # audit imports this module

                audit.record(
                    user=request.user,
                    action="access_denied",
                    outcome="denied",
                    detail=f"{request.method} {request.path} needs {' or '.join(roles)}",
                    request=request,
                )
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return cast(V, wrapper)

    return decorator


def grant_role(user: User, role: str) -> None:
    """Put the user in the group for `role`, and in no other role's group."""
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; expected one of {ROLES}")
    user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
    user.groups.add(Group.objects.get(name=role))
    if hasattr(user, _ROLE_MEMO):
        delattr(user, _ROLE_MEMO)


def requesting_user(user: AnyUser) -> RequestingUser:
    """Return who GP Connect requests are made for, from the user's profile.

    Raises ProfileMissing (a 403) if the user is anonymous or has no profile.
    """
    if not isinstance(user, User):
        raise ProfileMissing("Only a signed-in user can make GP Connect requests")
    profile = profile_of(user)
    if profile is None:
        raise ProfileMissing(f"User {user.get_username()!r} has no profile")
    return RequestingUser(
        local_user_id=str(profile.local_id),
        family_name=profile.family_name,
        given_names=tuple(profile.given_names.split()),
        prefixes=tuple(profile.title.split()),
        sds_user_id=profile.sds_user_id or "UNK",
        sds_role_profile_id=profile.sds_role_profile_id or "UNK",
    )


def profile_of(user: User) -> UserProfile | None:
    """Return the user's profile, or None.

    Django keeps it on the user object, which lives for one request (or one task), and
    `ProfileBackend` loads it with the user: a request to a practice needs it for the JWT
    and each audit row for the organisation, and each would otherwise be a query.
    """
    try:
        return user.profile
    except UserProfile.DoesNotExist:
        return None


class ProfileBackend(ModelBackend):
    """Django's own sign-in backend, loading a signed-in user's profile and role with them.

    One query per request instead of three: the profile is joined, and the role (the
    first of `ROLES` whose group they are in) comes from a subquery, remembered as
    `role_of` would remember it.
    """

    def get_user(self, user_id: Any) -> User | None:
        precedence = Case(*(When(name=role, then=Value(i)) for i, role in enumerate(ROLES)))
        first_role = (
            Group.objects.filter(user=OuterRef("pk"), name__in=ROLES)
            .order_by(precedence)
            .values("name")[:1]
        )
        try:
            user = (
                User._default_manager.select_related("profile")
                .annotate(viewer_role_group=Subquery(first_role))
                .get(pk=user_id)
            )
        except User.DoesNotExist:
            return None
        if not self.user_can_authenticate(user):
            return None
        group = getattr(user, "viewer_role_group", None)
        setattr(user, _ROLE_MEMO, group if group in ROLES else (ADMIN if user.is_staff else None))
        return user


def navigation(request: HttpRequest) -> dict[str, bool]:
    """Context processor: which role-specific links the header shows."""
    return {
        "can_audit": can(request.user, "audit"),
        "can_book": can(request.user, "book"),
        "can_see_appointments": can(request.user, "appointments"),
    }
