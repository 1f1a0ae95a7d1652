"""HDM Inspect services: ingest, scoring (Ray Serve), results (gRPC), training (Ray Train)."""
