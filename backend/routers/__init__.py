"""Thin routers per resource under /v1: HTTP in, sparling_core.inspect, HTTP out."""
