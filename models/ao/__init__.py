"""Adaptive-optics engines (learned aberration estimation)."""
