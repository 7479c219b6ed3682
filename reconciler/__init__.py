"""The GitOps engine: the TenantSpec, the pure renderer and the Git store. Knows nothing of HTTP."""
