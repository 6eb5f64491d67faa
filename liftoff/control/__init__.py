"""The supervisor's process: embedded Redis and its keeper, the state lock, hardware detection and the facts publisher,
the deployments controller, the gateway and reader processes."""
