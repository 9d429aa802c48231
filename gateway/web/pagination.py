"""``?page=&per_page=`` for every list endpoint: ``{"items": [...], "total": N, "page": P}``."""
from __future__ import annotations

from typing import Callable

from flask import current_app
from marshmallow import Schema, fields, validate
from sqlalchemy import Select, func, select


class Page(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


def paginate(query: Select, args: dict, to_json: Callable) -> dict:
    with current_app.extensions["gateway"].engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
        rows = conn.execute(query.limit(args["per_page"]).offset((args["page"] - 1) * args["per_page"])).all()
    return {"items": [to_json(row) for row in rows], "total": total, "page": args["page"], "per_page": args["per_page"]}
