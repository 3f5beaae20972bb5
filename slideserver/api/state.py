"""Typed access to what the lifespan put in the app state."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from slideserver.cache.base import TileCache
from slideserver.catalog.base import Catalog
from slideserver.handles import HandlePool
from slideserver.metrics import Metrics
from slideserver.services.iiif import IIIFService
from slideserver.services.links import LinkService
from slideserver.services.tiles import TileService
from slideserver.settings import Settings


@dataclass
class AppState:
    """The shared resources of one server process, closed on shutdown."""

    settings: Settings
    catalog: Catalog
    handles: HandlePool
    cache: TileCache
    service: TileService
    metrics: Metrics
    iiif: IIIFService
    links: LinkService
    """LIS orders in, cases out, over the catalog's LinkStore."""


def state_of(request: Request) -> AppState:
    """Return the process's shared resources."""
    state: AppState = request.app.state.slideserver
    return state


def service_of(request: Request) -> TileService:
    """Return the tile service."""
    return state_of(request).service


def iiif_of(request: Request) -> IIIFService:
    """Return the IIIF service."""
    return state_of(request).iiif


def links_of(request: Request) -> LinkService:
    """Return the link service."""
    return state_of(request).links
