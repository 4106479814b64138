"""Lesson 01: the code behind ``notebooks/01-hello.ipynb``."""
