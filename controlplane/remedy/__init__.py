"""People undoing mistakes: reviews of withheld hard actions, lifts by hand, exemptions,
appeals, and the figures of how often enforcement was overturned (`docs/appeals.md`)."""
