"""Lesson 08: the code behind ``notebooks/08-data-transfer.ipynb``."""
