"""The HTTP API: the app factory, error mapping and health endpoints."""
