"""FastAPI service for the Sparling Motif Explorer: `uvicorn backend.main:app`."""

import os

# torch's CPU kernels run on GNU OpenMP (libgomp), whose idle threads spin for
# GOMP_SPINCOUNT rounds (300,000 by default: several milliseconds here) after every parallel
# region before they sleep. A training loop wants that; a server does not: after each
# forward the spinning threads hold the cores that the event loop, the next request's
# parsing and the other replicas need, and at concurrency 8 they cost throughput
# (bench/api.py; README "Scale out"). libgomp reads the variable once, when torch is first
# imported, so it is set here, before any module of the service imports torch; a value
# already in the environment wins.
SERVER_GOMP_SPINCOUNT = "30000"
os.environ.setdefault("GOMP_SPINCOUNT", SERVER_GOMP_SPINCOUNT)
