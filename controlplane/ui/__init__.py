"""The auditor's web console (`/console`) and the trace API (`/v1/traces`)."""
