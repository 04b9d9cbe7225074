"""Experiments that reproduce the paper's tables with the sparling_core library."""
