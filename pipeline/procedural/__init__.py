"""Procedural orchard renderer: the embedded, offline image generator with exact masks."""
