"""The HTTP layer: the only part of slideserver that imports Starlette."""

from slideserver.api.app import create_app

__all__ = ["create_app"]
