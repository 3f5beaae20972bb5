"""Serving HTTP: the uvicorn runner, the protocol that writes each answer once, and the
process's log records."""
