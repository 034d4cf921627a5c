"""The signed-in user's own record."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from netsody_controller.accounts.schemas import UserOut
from netsody_controller.schemas import USER_ERRORS

router = Router(tags=["users"])


@router.get("", response={200: UserOut, **USER_ERRORS}, summary="The signed-in user")
def get_me(request: HttpRequest) -> object:
    return request.auth
