"""`sentiment-lab serve`: the FastAPI app (app.py) with its routes, schemas, middleware and metrics, dynamic
micro-batching (batching.py), explanations (explainer.py), the web page (page.py, static/) and uvicorn (run.py)."""
