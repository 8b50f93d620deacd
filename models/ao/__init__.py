"""Aberration estimation: Zernike amplitudes from phase-diversity bead images."""
