"""Lesson 12: the code behind ``notebooks/12-performance.ipynb``."""
