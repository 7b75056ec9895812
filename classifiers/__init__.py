"""Caveat's text classifiers: normalization, keyword rules and the transformer model."""
