"""Composing the parts into one HTTPS server (`keyless serve`)."""
