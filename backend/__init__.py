"""FastAPI service for the Sparling Motif Explorer: `uvicorn backend.main:app`."""
