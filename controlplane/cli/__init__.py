"""The `tollgate` command."""
