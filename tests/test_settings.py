"""Settings from the environment, overridden by explicit values."""

from __future__ import annotations

from pathlib import Path

from slideserver.settings import Settings


def test_environment_variables_fill_every_kind_of_field() -> None:
    env = {
        "SLIDESERVER_PORT": "9001",
        "SLIDESERVER_REDIS_TIMEOUT": "0.5",
        "SLIDESERVER_WATCH": "true",
        "SLIDESERVER_ROOTS": "/a:/b",
        "SLIDESERVER_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    settings = Settings.from_env(env)
    assert settings.port == 9001
    assert settings.redis_timeout == 0.5
    assert settings.watch is True
    assert settings.roots == (Path("/a"), Path("/b"))
    assert settings.redis_url == "redis://127.0.0.1:1/0"


def test_explicit_values_win_over_the_environment() -> None:
    settings = Settings.from_env({"SLIDESERVER_PORT": "9001"}, port=9002, host=None)
    assert settings.port == 9002
    assert settings.host == "127.0.0.1"
