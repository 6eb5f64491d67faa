"""Management: the management API, the reader supervisor, (later) the fit engine, deployments and health."""
