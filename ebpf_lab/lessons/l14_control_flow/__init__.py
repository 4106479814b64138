"""Lesson 14: the code behind ``notebooks/14-control-flow.ipynb`` (loops, tail calls, calls)."""
