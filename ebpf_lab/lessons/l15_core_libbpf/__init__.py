"""Lesson 15: the code behind ``notebooks/15-core-libbpf.ipynb`` (CO-RE with libbpf)."""
