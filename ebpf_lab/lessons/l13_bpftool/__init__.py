"""Lesson 13: the code behind ``notebooks/13-bpftool.ipynb``."""
