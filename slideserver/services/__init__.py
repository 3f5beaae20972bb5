"""The service layer: what routes call. No HTTP types, no ASGI scope."""
