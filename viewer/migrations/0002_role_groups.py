"""Create the role groups. What each role may do is in viewer/roles.py (ROLE_ACTIONS)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

# Copied rather than imported, so this migration means the same whatever roles.py becomes.
ROLE_GROUPS = ("Clinician", "Receptionist", "Auditor")


def create_groups(apps: Any, schema_editor: Any) -> None:
    Group = apps.get_model("auth", "Group")
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


def delete_groups(apps: Any, schema_editor: Any) -> None:
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name__in=ROLE_GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("viewer", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_groups, delete_groups)]
