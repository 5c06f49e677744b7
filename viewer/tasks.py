"""Celery tasks: thin interfaces that take primitive arguments and call one service."""

from __future__ import annotations

from celery import shared_task


@shared_task
def ping() -> str:
    """Return "pong": proves a worker consumes from the broker and results come back."""
    return "pong"
