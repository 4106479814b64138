"""Lesson 09: the code behind ``notebooks/09-tracing.ipynb``."""
