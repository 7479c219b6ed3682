"""HTTP routes, thin over api.db: find, authorize, validate, write rows + Change, answer."""
