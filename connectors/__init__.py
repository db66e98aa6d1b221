"""Connectors: one module per gateway, each behind `controlplane.enforce.sdk.Connector`."""
