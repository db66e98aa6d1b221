"""OpenTelemetry: the tracer provider, span names and `tollgate.*` attributes."""
