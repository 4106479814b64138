"""Lesson 06: the code behind ``notebooks/06-helpers.ipynb``."""
