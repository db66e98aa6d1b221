"""Plan: a decision's actions become `Action` rows, the desired state connectors enforce."""
