"""SQL building blocks of the catalog: engines, upserts, slide queries (``slides``), patients and
cases (``cases``).

:class:`slideserver.catalog.sql.SqlCatalog` puts them together.
"""
