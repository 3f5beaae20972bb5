"""Entry point for uvicorn worker processes: settings from the environment the CLI prepared."""

from __future__ import annotations

from starlette.applications import Starlette

from slideserver.api.app import create_app
from slideserver.settings import Settings


def app_from_env() -> Starlette:
    """Build the app from ``SLIDESERVER_*`` variables (``uvicorn --factory``)."""
    return create_app(Settings.from_env())
