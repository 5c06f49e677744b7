"""Fill the federation with the sandbox's practices; demo mode only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from viewer.models import FederationPractice, OrganisationType


class Command(BaseCommand):
    help = (
        "Create or update the federation's practices from the provider sandbox's catalogue, "
        "so receptionists can book in a demo. Demo mode only."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEMO_MODE:
            # A real federation is configured in the admin, never from the sandbox.
            raise CommandError("demo_federation only runs in demo mode (DEMO_MODE=1).")
        from gpconnect.sandbox.catalogue import PRACTICES  # the sandbox exists only in demos

        for practice in PRACTICES:
            FederationPractice.objects.update_or_create(
                ods_code=practice.ods,
                defaults={
                    "display_name": practice.name,
                    "organisation_type": OrganisationType.GP_PRACTICE,
                    # The sandbox publishes slots at its federated practices only.
                    "enabled": practice.federated,
                },
            )
        self.stdout.write("Federation practices (sandbox):")
        for row in FederationPractice.objects.order_by("ods_code"):
            state = "enabled" if row.enabled else "disabled"
            self.stdout.write(f"  {row.ods_code}  {row.display_name:<30} {state}")
