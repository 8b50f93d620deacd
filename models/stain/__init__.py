"""Virtual staining: pix2pix label-free → fluorescence, channel completion, trust map."""
