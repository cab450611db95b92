"""perfpulse.agent: instrument a Python web service."""
