"""A GP Connect (FHIR STU3) consumer library. It does not depend on Django."""

from __future__ import annotations
