"""All routers, included under /api/v1 by ``create_app``. One module per resource, each with one APIRouter."""

from fastapi import APIRouter

from flopwise.server.api import (
    admission,
    audit,
    aup,
    budgets,
    health,
    intake,
    orgs,
    policies,
    quotas,
    requests,
    roles,
    tokens,
    usage,
)

api_router = APIRouter()
# FastAPI matches a path against the routes in this order: the hot paths (health, request creation, admission)
# first, so they are not matched against every other router's routes on each call
api_router.include_router(health.router)
api_router.include_router(requests.router)
api_router.include_router(admission.router)
api_router.include_router(orgs.router)
api_router.include_router(tokens.router)
api_router.include_router(roles.router)
api_router.include_router(aup.router)
api_router.include_router(audit.router)
api_router.include_router(budgets.router)
api_router.include_router(quotas.router)
api_router.include_router(policies.router)
api_router.include_router(intake.router)
api_router.include_router(usage.router)
