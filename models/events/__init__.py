"""Event-detection engines (learned heat map)."""
