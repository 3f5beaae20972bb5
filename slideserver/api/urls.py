"""Path templates named by more than one module: the route, the tile lane and the policy table."""

from __future__ import annotations

DEEPZOOM_TILE = "/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}"
"""A Deep Zoom tile; answered by the tile lane first, by the routed endpoint otherwise."""
