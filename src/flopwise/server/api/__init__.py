"""All routers, included under /api/v1 by ``create_app``. One module per resource, each with one APIRouter."""

from fastapi import APIRouter

from flopwise.server.api import audit, aup, health, intake, orgs, roles, tokens, usage

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(orgs.router)
api_router.include_router(tokens.router)
api_router.include_router(roles.router)
api_router.include_router(aup.router)
api_router.include_router(audit.router)
api_router.include_router(intake.router)
api_router.include_router(usage.router)
