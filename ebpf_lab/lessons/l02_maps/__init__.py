"""Lesson 02: the code behind ``notebooks/02-maps-exec-per-uid.ipynb``."""
