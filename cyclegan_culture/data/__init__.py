"""Reading images and the unpaired A/B datasets."""
