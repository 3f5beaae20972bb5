"""SQL building blocks of the catalog: engines, upserts, slide queries, the LIS side.

:class:`slideserver.catalog.sql.SqlCatalog` puts them together.
"""
