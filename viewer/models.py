"""The viewer's persistent state. Nothing yet: the audit log arrives with patient search."""

from __future__ import annotations
