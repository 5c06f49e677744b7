"""Admin: user profiles edited with their user; the audit trail read-only; the federation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.http import HttpRequest

from viewer.models import AuditEvent, Booking, FederationPractice, UserProfile

# The admin classes are generic only in django-stubs; at run time they take no parameters.
if TYPE_CHECKING:
    _ProfileInline = admin.StackedInline[UserProfile, User]
    _AuditEventAdmin = admin.ModelAdmin[AuditEvent]
    _UserAdmin = UserAdmin[User]
    _FederationPracticeAdmin = admin.ModelAdmin[FederationPractice]
    _BookingAdmin = admin.ModelAdmin[Booking]
else:
    _ProfileInline = admin.StackedInline
    _AuditEventAdmin = admin.ModelAdmin
    _UserAdmin = UserAdmin
    _FederationPracticeAdmin = admin.ModelAdmin
    _BookingAdmin = admin.ModelAdmin


class UserProfileInline(_ProfileInline):
    model = UserProfile
    can_delete = False
    readonly_fields = ("local_id",)


class UserWithProfileAdmin(_UserAdmin):
    inlines = (*UserAdmin.inlines, UserProfileInline)


admin.site.unregister(User)
admin.site.register(User, UserWithProfileAdmin)


@admin.register(AuditEvent)
class AuditEventAdmin(_AuditEventAdmin):
    list_display = ("when", "username", "role", "action", "outcome", "nhs_number", "document_id")
    list_filter = ("action", "outcome", "role")
    search_fields = ("=nhs_number", "=username", "=trace_id", "=document_id")
    date_hierarchy = "when"
    actions = None  # no "delete selected"

    # The trail is append-only: written by viewer.audit.record, never by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FederationPractice)
class FederationPracticeAdmin(_FederationPracticeAdmin):
    """The practices receptionists may book at: the federation is ours to define (SPEC §3.6)."""

    list_display = ("display_name", "ods_code", "organisation_type", "enabled")
    list_editable = ("enabled",)
    list_filter = ("enabled", "organisation_type")
    search_fields = ("ods_code", "display_name")


@admin.register(Booking)
class BookingAdmin(_BookingAdmin):
    """Bookings made through the service, read-only: what happened to each attempt."""

    list_display = ("created_at", "user", "state", "practice_ods", "first_slot_id", "start")
    list_filter = ("state", "practice_ods")
    search_fields = ("=nhs_number", "=appointment_id", "=trace_id", "=token")
    date_hierarchy = "created_at"
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
