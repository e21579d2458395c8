"""`sentiment-lab serve`: the REST API (app.py), dynamic micro-batching (batching.py) and the web page (static/)."""
