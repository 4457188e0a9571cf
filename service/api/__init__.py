"""The REST API: routers, dependencies, schemas and the one error translation."""
