"""Load tests of the cluster layout: the shift change (``make loadtest``), the soak (``make soak``).

Both start :class:`deploy.cluster.Cluster` (two instances behind nginx over PostgreSQL and Redis),
fill it with cases, and drive it with locust, a real load tool, from a second process.
"""
