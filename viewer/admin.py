"""Admin: user profiles edited with their user; the audit trail read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.http import HttpRequest

from viewer.models import AuditEvent, UserProfile

# The admin classes are generic only in django-stubs; at run time they take no parameters.
if TYPE_CHECKING:
    _ProfileInline = admin.StackedInline[UserProfile, User]
    _AuditEventAdmin = admin.ModelAdmin[AuditEvent]
    _UserAdmin = UserAdmin[User]
else:
    _ProfileInline = admin.StackedInline
    _AuditEventAdmin = admin.ModelAdmin
    _UserAdmin = UserAdmin


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
