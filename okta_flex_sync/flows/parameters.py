"""Flow parameter types whose JSON schema lets Prefect refuse a bad value when the run is created.

Prefect checks a deployment's parameters against the flow's schema when a run is created
(`enforce_parameter_schema`), but not JSON Schema's `format: date`; a `pattern` it does check.
So `prefect deployment run backfill/backfill -p start=2026-13-01` is refused at once, instead
of being queued and failing in the worker.  Day 30 of February passes the pattern and is refused
by the flow's own parameter validation, before anything runs.
"""
from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import Field

DAY_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"

Day = Annotated[date, Field(description="a UTC day, YYYY-MM-DD", json_schema_extra={"pattern": DAY_PATTERN})]

# `minimum` is a keyword Prefect's check enforces: `-p max_changes=-1` is refused at creation.
ChangeLimit = Annotated[int, Field(ge=0, description="refuse to repair when more workers would change")]
