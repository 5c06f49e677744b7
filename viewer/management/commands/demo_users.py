"""Create the demo users (clinician, receptionist, auditor); demo mode only."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from viewer.models import UserProfile
from viewer.roles import AUDITOR, CLINICIAN, RECEPTIONIST, grant_role

DEFAULT_PASSWORD = "gpconnect-demo"

# Synthetic identities: the SDS ids are made up and belong to nobody.
DEMO_USERS = (
    ("clinician", CLINICIAN, "Dr", "Demo", "Clinician", "900000000001", "900000000101"),
    ("receptionist", RECEPTIONIST, "", "Demo", "Receptionist", "900000000002", "900000000102"),
    ("auditor", AUDITOR, "", "Demo", "Auditor", "900000000003", "900000000103"),
)


class Command(BaseCommand):
    help = "Create or update the demo users, with the password from DEMO_PASSWORD. Demo mode only."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEMO_MODE:
            # The password is published, so these accounts must never exist in production.
            raise CommandError(
                "demo_users only runs in demo mode (DEMO_MODE=1): "
                "it creates accounts whose password is public."
            )
        password = os.environ.get("DEMO_PASSWORD", "").strip() or DEFAULT_PASSWORD
        with transaction.atomic():
            for username, role, title, given, family, sds_user, sds_role_profile in DEMO_USERS:
                user, _ = User.objects.get_or_create(username=username)
                user.first_name, user.last_name = given, family
                user.is_active, user.is_staff, user.is_superuser = True, False, False
                user.set_password(password)
                user.save()
                grant_role(user, role)
                UserProfile.objects.update_or_create(
                    user=user,
                    defaults={
                        "title": title,
                        "given_names": given,
                        "family_name": family,
                        "sds_user_id": sds_user,
                        "sds_role_profile_id": sds_role_profile,
                        "organisation_ods_code": settings.GPCONNECT_CONSUMER_ODS_CODE,
                        "organisation_name": settings.GPCONNECT_CONSUMER_ORG_NAME,
                    },
                )
        # `make demo` runs this command only: the federation's demo practices come with it.
        call_command("demo_federation", stdout=self.stdout)
        self.stdout.write("Demo users (synthetic data only):")
        for username, role, *_ in DEMO_USERS:
            self.stdout.write(f"  {username:<13} password: {password:<20} role: {role}")
