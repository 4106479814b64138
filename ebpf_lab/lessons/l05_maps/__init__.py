"""Lesson 05: the code behind ``notebooks/05-maps.ipynb``."""
