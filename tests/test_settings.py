"""config.settings, loaded in a fresh interpreter with a controlled environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import env_bool, env_int, env_list, env_secret

BASE_DIR = Path(__file__).resolve().parent.parent

REPORT = """
import json
from config import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG,
    "SECRET_KEY": s.SECRET_KEY,
    "ENGINE": s.DATABASES["default"]["ENGINE"],
    "DB_NAME": str(s.DATABASES["default"]["NAME"]),
    "CACHE": s.CACHES["default"]["BACKEND"],
    "BROKER": s.CELERY_BROKER_URL,
    "RESULTS": s.CELERY_RESULT_BACKEND,
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
}))
"""


def load_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import config.settings in a new interpreter with only PATH, VAR_DIR and `env` set."""
    clean_env = {"PATH": os.environ.get("PATH", ""), "VAR_DIR": str(tmp_path / "var"), **env}
    return subprocess.run(
        [sys.executable, "-c", REPORT],
        cwd=BASE_DIR,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_with(tmp_path: Path, **env: str) -> dict[str, Any]:
    result = load_settings(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_debug_is_off_unless_the_environment_turns_it_on(tmp_path: Path) -> None:
    assert settings_with(tmp_path, SECRET_KEY="x")["DEBUG"] is False
    assert settings_with(tmp_path, SECRET_KEY="x", DEBUG="1")["DEBUG"] is True


def test_secret_key_is_required_when_debug_is_off_and_not_in_demo_mode(tmp_path: Path) -> None:
    result = load_settings(tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    assert settings_with(tmp_path, SECRET_KEY_FILE=str(secret_file))["SECRET_KEY"] == "from-a-file"


def test_demo_mode_runs_with_no_other_configuration(tmp_path: Path) -> None:
    first = settings_with(tmp_path, DEMO_MODE="1")
    second = settings_with(tmp_path, DEMO_MODE="1")
    assert first["DEBUG"] is True
    assert first["SESSION_COOKIE_SECURE"] is False
    assert first["CSRF_COOKIE_SECURE"] is False
    # One key per checkout, kept under var/, so sessions survive a restart.
    assert len(first["SECRET_KEY"]) >= 50
    assert first["SECRET_KEY"] == second["SECRET_KEY"]
    assert (tmp_path / "var" / "demo-secret-key").read_text() == first["SECRET_KEY"]


def test_cookies_are_secure_by_default_and_hosts_are_local(tmp_path: Path) -> None:
    loaded = settings_with(tmp_path, SECRET_KEY="x")
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["CSRF_COOKIE_SECURE"] is True
    assert loaded["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost"]


def test_database_url_selects_postgresql(tmp_path: Path) -> None:
    loaded = settings_with(
        tmp_path, SECRET_KEY="x", DATABASE_URL="postgres://app@db.example:5432/viewer"
    )
    assert loaded["ENGINE"] == "django.db.backends.postgresql"
    assert loaded["DB_NAME"] == "viewer"


def test_no_database_url_means_sqlite_under_var(tmp_path: Path) -> None:
    loaded = settings_with(tmp_path, SECRET_KEY="x")
    assert loaded["ENGINE"] == "django.db.backends.sqlite3"
    assert loaded["DB_NAME"] == str(tmp_path / "var" / "db.sqlite3")
    assert (tmp_path / "var").is_dir()


def test_redis_url_selects_redis_for_the_cache_and_celery(tmp_path: Path) -> None:
    loaded = settings_with(tmp_path, SECRET_KEY="x", REDIS_URL="redis://cache.example:6379/1")
    assert loaded["CACHE"] == "django.core.cache.backends.redis.RedisCache"
    assert loaded["BROKER"] == loaded["RESULTS"] == "redis://cache.example:6379/1"


def test_no_redis_url_means_an_in_process_cache_and_a_file_broker(tmp_path: Path) -> None:
    loaded = settings_with(tmp_path, SECRET_KEY="x")
    assert loaded["CACHE"] == "django.core.cache.backends.locmem.LocMemCache"
    assert loaded["BROKER"] == "filesystem://localhost/"
    assert loaded["RESULTS"] == f"file://{tmp_path / 'var' / 'celery' / 'results'}"


def test_env_secret_reads_the_file_named_by_name_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "api-key").write_text("s3cret\n")
    monkeypatch.setenv("SOME_API_KEY", "from-the-variable")
    monkeypatch.setenv("SOME_API_KEY_FILE", str(tmp_path / "api-key"))
    assert env_secret("SOME_API_KEY") == "s3cret"


def test_env_secret_falls_back_to_the_variable_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOME_API_KEY_FILE", raising=False)
    monkeypatch.delenv("SOME_API_KEY", raising=False)
    assert env_secret("SOME_API_KEY", "fallback") == "fallback"
    monkeypatch.setenv("SOME_API_KEY", "from-the-variable")
    assert env_secret("SOME_API_KEY") == "from-the-variable"


def test_env_secret_refuses_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="SOME_API_KEY_FILE"):
        env_secret("SOME_API_KEY")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", False),
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("off", False),
    ],
)
def test_env_bool_reads_the_usual_spellings(
    raw: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_FLAG", raw)
    assert env_bool("SOME_FLAG", False) is expected


def test_env_bool_and_env_int_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG"):
        env_bool("SOME_FLAG", False)
    monkeypatch.setenv("SOME_NUMBER", "five")
    with pytest.raises(ImproperlyConfigured, match="SOME_NUMBER"):
        env_int("SOME_NUMBER", 1)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_HOSTS", " a.example , ,b.example,")
    assert env_list("SOME_HOSTS") == ["a.example", "b.example"]


def test_the_placeholder_secret_key_from_env_example_is_refused(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="change-me-to-50-random-characters")
    assert result.returncode != 0
    assert "placeholder" in result.stderr


def test_a_relative_var_dir_is_inside_the_checkout(tmp_path: Path) -> None:
    result = load_settings(tmp_path, SECRET_KEY="x", VAR_DIR="var")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["DB_NAME"] == str(BASE_DIR / "var" / "db.sqlite3")


def test_request_urls_which_carry_nhs_numbers_are_not_logged():
    import logging

    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


def test_makemigrations_needs_no_secret_but_serving_commands_still_do(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "VAR_DIR": str(tmp_path / "var")}

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    checked = manage("makemigrations", "--check", "--dry-run")
    assert checked.returncode == 0, checked.stderr
    assert "No changes detected" in checked.stdout
    refused = manage("check")
    assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr
