"""perfpulse.query."""
