"""CrowdSec bouncers: the decision stream every existing CrowdSec bouncer can pull."""
