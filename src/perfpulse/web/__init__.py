"""perfpulse.web."""
