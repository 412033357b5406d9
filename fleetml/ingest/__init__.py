"""Validation and adapters that turn HTTP batches and files into stored samples and events."""
