"""A hand-written Flask + SQLAlchemy ORM app for leads, the way a developer would write it by hand:
the baseline the generated API is measured against (bench/api_vs_handwritten.py).

It uses the same database and table the engine created, checks the same bearer tokens, validates
its input with a marshmallow schema, and answers JSON.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from decimal import Decimal

from flask import Flask, abort, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

engine = create_engine(os.environ["DATABASE_URL"])


class Base(DeclarativeBase):
    pass


class Lead(Base):
    __tablename__ = "lead"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, default=1)
    first_name: Mapped[str | None] = mapped_column(String(80))
    last_name: Mapped[str] = mapped_column(String(80))
    company: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(String(64))
    city: Mapped[str | None] = mapped_column(String(120))
    annual_revenue: Mapped[int | None] = mapped_column(BigInteger)   # cents, as the engine stores it on SQLite

    def to_dict(self):
        return {"id": self.id, "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "owner_id": self.owner_id, "version": self.version, "first_name": self.first_name,
                "last_name": self.last_name, "company": self.company, "email": self.email, "phone": self.phone,
                "status": self.status, "city": self.city,
                "annual_revenue": None if self.annual_revenue is None else str(Decimal(self.annual_revenue) / 100)}


class Token(Base):
    __tablename__ = "_crm_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    token_hash: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active: Mapped[bool | None] = mapped_column(Boolean)


class LeadIn(Schema):
    first_name = fields.String(validate=validate.Length(max=80))
    last_name = fields.String(required=True, validate=validate.Length(max=80))
    company = fields.String(required=True, validate=validate.Length(max=255))
    email = fields.Email()
    phone = fields.String(validate=validate.Length(max=40))
    status = fields.String(validate=validate.OneOf(["new", "working", "qualified", "unqualified", "converted"]))
    city = fields.String(validate=validate.Length(max=120))
    annual_revenue = fields.Decimal(places=2)


app = Flask(__name__)
lead_in = LeadIn()


@app.before_request
def authenticate():
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        abort(401)
    digest = hashlib.sha256(header[7:].encode()).hexdigest()
    with Session(engine) as session:
        found = session.execute(select(User.id).join(Token, Token.user_id == User.id)
                                .where(Token.token_hash == digest, Token.revoked_at.is_(None),
                                       User.active.is_not(False))).first()
    if found is None:
        abort(401)
    request.user_id = found[0]


@app.get("/leads/<int:lead_id>")
def get_lead(lead_id):
    with Session(engine) as session:
        lead = session.get(Lead, lead_id)
        if lead is None:
            abort(404)
        return jsonify(lead.to_dict())


@app.get("/leads")
def list_leads():
    limit = min(int(request.args.get("limit", 50)), 500)
    with Session(engine) as session:
        query = select(Lead).order_by(Lead.created_at.desc()).limit(limit)
        if "status" in request.args:
            query = query.where(Lead.status == request.args["status"])
        return jsonify({"data": [lead.to_dict() for lead in session.scalars(query)]})


@app.post("/leads")
def create_lead():
    try:
        data = lead_in.load(request.get_json())
    except ValidationError as err:
        return jsonify({"errors": err.messages}), 422
    if "annual_revenue" in data:
        data["annual_revenue"] = int(data["annual_revenue"] * 100)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with Session(engine) as session:
        lead = Lead(**data, created_at=now, updated_at=now, owner_id=request.user_id, version=1)
        session.add(lead)
        session.commit()
        return jsonify(lead.to_dict()), 201
