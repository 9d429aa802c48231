"""What the views of a plugin's blueprints import (see the ``register_blueprints`` hook).

Roles (``require_role`` in a view, ``needs`` as its decorator), console pages
(``console_blueprint``: signed-in users, CSRF, the layout ``console/base.html``; ``all_sources``
lists the sources), JSON errors (raise ``ApiError``; marshmallow's ``ValidationError`` answers 422
naming each field), request bodies, text fields the database can store, filters, paging and
transactions; ``capped_count`` counts up to ``COUNT_CAP`` (a page of a million rows need not count them all), and
``counted_page`` reads a page and that count at once.
Plugins import these from here, never from the core's ``gateway.web`` modules.
Every blueprint also gets the app's URL converters: ``<id:...>`` (a row id) and ``<source_key:...>``.
``documented`` describes a view for the OpenAPI document (``Raw``: an answer that is not JSON).
"""
from gateway.contracts import ApiError
from gateway.web.api import all_sources
from gateway.web.auth import ROLES, actor, needs, require_role
from gateway.web.common import (
    COUNT_CAP, Page, Text, capped_count, counted_page, iso, json_object, page_of, paginate, reading, transaction,
    where_given,
)
from gateway.web.console import console_blueprint
from gateway.web.openapi import Raw, documented

__all__ = [
    "COUNT_CAP", "ApiError", "ROLES", "Page", "Raw", "Text", "actor", "all_sources", "capped_count", "console_blueprint",
    "counted_page", "documented", "iso", "json_object", "needs", "page_of", "paginate", "reading", "require_role",
    "transaction", "where_given",
]
