"""Gunicorn settings for the floor: the gateway's front and keep-alive cycling, so both are served the same way."""
from gateway.web.gunicorn_conf import pre_request  # noqa: F401  (gunicorn reads it from this module)

worker_class = "gateway.web.front.FrontWorker"
