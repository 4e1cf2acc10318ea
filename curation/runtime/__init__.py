"""Long work: background jobs in a warm worker, and workspace health checks."""
