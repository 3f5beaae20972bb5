"""Route lists, one module per part of the URL scheme (DESIGN section 3)."""
