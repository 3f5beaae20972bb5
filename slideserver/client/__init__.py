"""A Python client for slideserver; stands alone (imports nothing else of slideserver).

>>> from slideserver.client import Client
>>> with Client("https://slides.example.org", token="...") as client:
...     for slide in client.slides(stain="HE"):
...         patch = client.read_region(slide["id"], 4096, 4096, 512, 512, mpp=0.5)  # 256 x 256

Dependencies: httpx, numpy and Pillow (HTTP/2 when the ``h2`` package is installed).
"""

from slideserver.client.aio import AsyncClient
from slideserver.client.dataset import Patch, TileDataset
from slideserver.client.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ServerError,
    SlideChanged,
    SlideServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from slideserver.client.geometry import SlideGeometry
from slideserver.client.retry import RetryPolicy
from slideserver.client.sync import Client, http2_available
from slideserver.client.wire import DeepZoomInfo, DeepZoomTile, Region

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "DeepZoomInfo",
    "DeepZoomTile",
    "Forbidden",
    "NotFound",
    "Patch",
    "Region",
    "RetryPolicy",
    "ServerError",
    "SlideChanged",
    "SlideGeometry",
    "SlideServerError",
    "TileDataset",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "http2_available",
]
