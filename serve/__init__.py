"""mdl.serve (the serve/ folder): `mdl serve`, every registered domain from one process over HTTP.

    pool.py      the served networks, rebuilt from the registry's current versions and swapped atomically
    batcher.py   the dynamic batcher: one worker thread owns the networks, one stacked pass per batch
    metrics.py   counters, histograms, windowed percentiles: Prometheus text
    app.py       FastAPI routes, request parsing, one-line errors
    server.py    wiring, and uvicorn on a socket bound here

It stands on the workflow layer (mdl.workflows: networks from registered artifacts, version rows, top
classes) as the CLI does; nothing below it imports it.
"""
