"""A GP Connect provider sandbox: a strict provider with synthetic patients, for demos and tests.

Run it with `python -m gpconnect.sandbox`; embed it with `create_app(Sandbox(...))`.
"""

from __future__ import annotations
