"""Tollgate's vocabulary: the value types every layer shares (DESIGN.md's names)."""
