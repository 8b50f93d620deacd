"""smartscope: a real-time, acquisition-coupled smart-microscopy controller."""

__version__ = "0.1.0"
