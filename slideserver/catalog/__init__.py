"""The slide catalog: which slides exist, where, and to whom and which case they belong."""

from slideserver.catalog.base import Catalog, SlidePage, SlideQuery, SlideRecord

__all__ = ["Catalog", "SlidePage", "SlideQuery", "SlideRecord"]
