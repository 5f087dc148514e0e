"""Evaluation: culture fingerprints, metrics, and the analysis of how cultures differ."""
