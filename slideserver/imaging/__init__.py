"""Pixels: reading scaled regions from readers, encoding, the IIIF transform."""
