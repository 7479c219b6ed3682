"""The Hexabase product: settings, database, auth, HTTP API, outbox relay and workers."""
