"""Dock widgets: thin Qt front ends over the core API. Nothing outside this package imports it."""
