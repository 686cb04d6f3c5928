"""The audit API: the allocator's append-only address history and its current model,
read-only over HTTP (FastAPI) and from the command line.

`parsing` checks what callers name, `queries` answers from the database, `models` are
the answers' shapes, `app` puts them behind bearer tokens under /v1.
"""
