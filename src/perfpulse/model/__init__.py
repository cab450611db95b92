"""perfpulse.model."""
