"""The Content-Security-Policy, https-only settings and `check --deploy` under production settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def policy_of(response: object) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    directives = [part.strip().split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


def test_every_page_forbids_scripts_and_styles_from_anywhere_but_our_own_origin(
    client: Client,
) -> None:
    policy = policy_of(client.get(reverse("login")))
    assert policy["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]


def test_the_one_inline_script_runs_by_the_nonce_the_policy_names(client: Client) -> None:
    response = client.get(reverse("login"))
    nonces = [v for v in policy_of(response)["script-src"] if v.startswith("'nonce-")]
    assert len(nonces) == 1
    nonce = nonces[0].removeprefix("'nonce-").removesuffix("'")
    assert len(nonce) >= 22
    html = response.content.decode()
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline_scripts == [f' nonce="{nonce}"']


def test_each_response_gets_a_fresh_nonce(client: Client) -> None:
    first = policy_of(client.get(reverse("login")))["script-src"]
    second = policy_of(client.get(reverse("login")))["script-src"]
    assert first != second


def test_htmx_is_configured_to_run_without_eval_inline_styles_or_browser_storage(
    client: Client,
) -> None:
    html = client.get(reverse("login")).content.decode()
    config = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", html)
    assert config is not None
    for setting in (
        '"allowEval": false',
        '"includeIndicatorStyles": false',
        '"allowScriptTags": false',
        '"historyCacheSize": 0',
    ):
        assert setting in config.group(1)


def test_cookies_are_host_only_and_secure_in_production() -> None:
    assert settings.SESSION_COOKIE_NAME == "__Host-sessionid"
    assert settings.CSRF_COOKIE_NAME == "__Host-csrftoken"
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    assert settings.SECURE_HSTS_SECONDS >= 31_536_000


def production_environment(**overrides: str) -> dict[str, str]:
    keep = {"PATH", "HOME", "LANG", "VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(SECRET_KEY="a-deploy-check-key-" + "x" * 40, VAR_DIR=overrides.pop("VAR_DIR"))
    env.update(overrides)
    return env


def test_check_deploy_is_clean_with_the_production_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_environment(VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
