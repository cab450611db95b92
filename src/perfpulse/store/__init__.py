"""perfpulse.store."""
