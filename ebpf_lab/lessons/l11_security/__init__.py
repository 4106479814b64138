"""Lesson 11: the code behind ``notebooks/11-security.ipynb``."""
