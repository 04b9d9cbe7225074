"""Streamlit frontend of the Sparling Motif Explorer. Talks to the backend over HTTP only."""
