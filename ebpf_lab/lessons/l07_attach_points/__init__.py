"""Lesson 07: the code behind ``notebooks/07-attach-points.ipynb``."""
