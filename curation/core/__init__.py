"""Foundations every layer shares: the vocabulary, progress reporting and option validation."""
