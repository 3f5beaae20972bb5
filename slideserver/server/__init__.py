"""Serving HTTP: the uvicorn runner and the protocol that writes each answer once."""
