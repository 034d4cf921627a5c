"""A development-only OpenID provider for `netsody-controller dev` and the tests.

It signs in anyone as any email address without a password, so it must never be exposed.
It serves discovery, JWKS, the authorization code grant with PKCE, the device authorization
grant, refresh tokens and userinfo. Run it with `python -m netsody_controller.devidp`, or in a
test with `start_dev_idp(tmp_path)`.
"""

from netsody_controller.devidp.provider import (
    AGENT_CLIENT_ID,
    CONTROLLER_CLIENT_ID,
    DEVICE_CODE_GRANT,
    DevClient,
    DevIdp,
    DevIdpSettings,
    OAuthError,
    default_clients,
)
from netsody_controller.devidp.server import RunningDevIdp, bind_dev_idp, start_dev_idp

__all__ = [
    "AGENT_CLIENT_ID",
    "CONTROLLER_CLIENT_ID",
    "DEVICE_CODE_GRANT",
    "DevClient",
    "DevIdp",
    "DevIdpSettings",
    "OAuthError",
    "RunningDevIdp",
    "bind_dev_idp",
    "default_clients",
    "start_dev_idp",
]
