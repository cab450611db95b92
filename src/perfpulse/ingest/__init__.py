"""perfpulse.ingest."""
