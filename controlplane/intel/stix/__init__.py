"""STIX 2.1 objects: Tollgate indicators and retractions in and out."""
