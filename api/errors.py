"""Client errors in one shape: 422 names the field and the rule, like FastAPI's own validation."""

from __future__ import annotations

from fastapi import HTTPException


class Invalid(HTTPException):
    """Bad input found after parsing (a duplicate name, an unknown plan, a cycle)."""

    def __init__(self, field: str, message: str, *, kind: str = "value_error") -> None:
        loc = ["body", *field.split(".")] if field else ["body"]
        super().__init__(422, detail=[{"loc": loc, "msg": message, "type": kind}])


class NotFound(HTTPException):
    def __init__(self, what: str) -> None:
        super().__init__(404, detail=f"{what} not found")


class Conflict(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(409, detail=message)


class Forbidden(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(403, detail=message)
