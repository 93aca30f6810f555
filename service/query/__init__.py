"""Reads: selectors, series matching, merges and the answers built from them."""
