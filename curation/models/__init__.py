"""Classifiers trained on the labels: heads, fine-tuning, runs and their evaluation."""
