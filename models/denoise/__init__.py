"""Denoising engines: Noise2Void (self-supervised) and CARE (supervised)."""
