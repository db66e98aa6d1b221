"""Durable state: SQLModel tables, the database connection and its migrations."""
