# cython: language_level=3
"""Placeholder: the compiled offer-matching core is being written (issue 3)."""
