"""Customers: what the lab knows about accounts (its records, and the keys and networks
seen in verdicts), read by policies as `input.context.customer` and by suspensions."""
