"""Thin routers per resource under /v1: HTTP in, sparling_core.analysis.inspect, HTTP out."""
