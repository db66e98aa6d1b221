"""Who may call what: bearer tokens with one role each, stored hashed."""
