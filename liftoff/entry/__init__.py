"""The top layer: the `liftoff` command, the six port apps assembled, gunicorn, key making."""
