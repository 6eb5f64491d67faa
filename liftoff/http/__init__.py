"""HTTP pieces every port shares: error bodies, JSON responses, body parsing, the port-app builder, middleware,
authentication."""
