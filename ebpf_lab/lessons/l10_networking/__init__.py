"""Lesson 10: the code behind ``notebooks/10-networking.ipynb``."""
