"""perfpulse.spool."""
