"""Pydantic shapes on the wire (API request and response bodies) and between stages."""
