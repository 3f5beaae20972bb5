"""Slide readers: one small interface, one implementation per backend library."""

from slideserver.readers.base import SlideReader
from slideserver.readers.registry import ReaderRegistry, default_registry

__all__ = ["ReaderRegistry", "SlideReader", "default_registry"]
