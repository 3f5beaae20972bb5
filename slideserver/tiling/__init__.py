"""Pure tile geometry: Deep Zoom and IIIF grids, no I/O."""
