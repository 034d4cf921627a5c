"""OpenID Connect for the controller: access token validation and userinfo.

This package imports no Django at module level, so it can be used and tested on its own.
"""

from netsody_controller.oidc.errors import (
    EmailNotVerifiedError,
    OidcError,
    ProviderConfigurationError,
    ProviderUnavailableError,
    TokenAlgorithmNotAllowedError,
    TokenExpiredError,
    TokenInvalidError,
    TokenInvalidSignatureError,
    TokenNotYetValidError,
    TokenRejectedByProviderError,
    TokenUnknownKeyError,
    TokenWrongAudienceError,
    TokenWrongIssuerError,
    UserInfoSubjectMismatchError,
)
from netsody_controller.oidc.provider import (
    ALLOWED_ALGORITHMS,
    OidcProvider,
    ProviderMetadata,
    TokenClaims,
    UserInfo,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "EmailNotVerifiedError",
    "OidcError",
    "OidcProvider",
    "ProviderConfigurationError",
    "ProviderMetadata",
    "ProviderUnavailableError",
    "TokenAlgorithmNotAllowedError",
    "TokenClaims",
    "TokenExpiredError",
    "TokenInvalidError",
    "TokenInvalidSignatureError",
    "TokenNotYetValidError",
    "TokenRejectedByProviderError",
    "TokenUnknownKeyError",
    "TokenWrongAudienceError",
    "TokenWrongIssuerError",
    "UserInfo",
    "UserInfoSubjectMismatchError",
]
