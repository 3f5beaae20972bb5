"""A Python client for slideserver; stands alone (imports nothing else of slideserver)."""
