"""The TAXII 2.1 server: discovery, the API root, collections, objects and manifests."""
