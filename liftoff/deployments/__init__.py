"""Live deployments: the model (validation, scaling rules) and their Redis store, shared by the management routes and
the supervisor's controller."""
