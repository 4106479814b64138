"""Lesson 03: the code behind ``notebooks/03-perf-buffer.ipynb``."""
