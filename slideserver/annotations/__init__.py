"""Annotations: geometries on slides, their layers, history and measurements.

Read and written as GeoJSON, QuPath's GeoJSON and CSV.
"""
