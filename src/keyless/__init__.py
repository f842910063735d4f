"""Keyless: passwordless connections between applications and the services they use."""

__version__ = "0.1.0"
