"""perfpulse: self-hosted performance monitoring, from the browser to the database."""

__version__ = "0.1.0"

__all__ = ["__version__"]
