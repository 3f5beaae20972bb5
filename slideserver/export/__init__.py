"""Tile datasets at scale: patches of a collection of slides written as shards.

On one machine, or on a Dask cluster when the job outgrows it.
"""
