"""Lesson 04: the code behind ``notebooks/04-bytecode-and-verifier.ipynb``."""
