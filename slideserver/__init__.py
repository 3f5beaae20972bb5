"""slideserver: a whole-slide histology image server (Deep Zoom, IIIF, catalog, LIS links)."""

__version__ = "0.1.0"
