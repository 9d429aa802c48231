"""Behind a reverse proxy: ``X-Forwarded-*`` believed only from the proxies the operator names.

Anyone can send ``X-Forwarded-For``; believed from everyone, it would let a sender choose the
address stored with its request.  ``GATEWAY_FORWARDED_ALLOW_IPS`` lists the proxies (addresses or
networks); from them, werkzeug's ProxyFix takes the client's address, scheme, host and port
from the last hop's headers, and from anyone else the headers are ignored.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxies:
    def __init__(self, app, allowed: Iterable[str]):
        self.app = app
        self.proxied = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed]

    def _trusted(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self.networks if network.version == peer.version)

    def __call__(self, environ, start_response):
        app = self.proxied if self._trusted(environ.get("REMOTE_ADDR", "")) else self.app
        return app(environ, start_response)
