"""The results service: consumes `inspection.results`, stores each result once (SQLite or
PostgreSQL), and serves MES clients over gRPC (`hdm.v1.ResultsService`).

In-process use (the demo, tests): `services.results.service.ResultsService(cfg).start()` returns
the bound port, `.stop()` shuts down; `services.results.client.ResultsClient` talks to it.
Nothing is imported here so that `hdm --help` stays fast.
"""
