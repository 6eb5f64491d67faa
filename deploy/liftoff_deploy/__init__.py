"""Liftoff's Kubernetes manifests, rendered from a values file (docs/scaling.md, "Kubernetes").

`values` reads and checks the values, `config_file` turns them into the ConfigMap's config.toml (checked by
Liftoff's own settings model), `objects` builds the Kubernetes objects and `validate` checks them against the
Kubernetes schemas and KEDA's ScaledObject fields. `deploy/render.py` is the command line.
"""
