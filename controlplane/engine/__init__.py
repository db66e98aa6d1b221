"""Policy engines: one `PolicyEngine` interface, the embedded OPA evaluator behind it."""
