"""All routers, included under /api/v1 by ``create_app``. One module per resource, each with one APIRouter."""

from fastapi import APIRouter

from flopwise.server.api import health

api_router = APIRouter()
api_router.include_router(health.router)
