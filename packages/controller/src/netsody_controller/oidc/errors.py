"""The errors of OpenID Connect token validation and userinfo lookups.

Every error carries a stable `code` (sent to API clients in the `{"detail", "code"}` envelope)
and the HTTP status the API answers with: 401 for a token that must not be accepted, 403 for a
valid token whose user is refused, 503 when the identity provider cannot be reached or is
misconfigured.
"""


class OidcError(Exception):
    """Base class of every error raised by `netsody_controller.oidc`."""

    code = "oidc_error"
    http_status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TokenInvalidError(OidcError):
    """The token is not a well-formed JWT or lacks a required claim."""

    code = "token_invalid"


class TokenAlgorithmNotAllowedError(TokenInvalidError):
    """The token header names an algorithm outside the allow-list (for example `none`, HS256)."""

    code = "token_algorithm_not_allowed"


class TokenUnknownKeyError(TokenInvalidError):
    """The token names a key id that the provider's JWKS does not contain."""

    code = "token_unknown_key"


class TokenInvalidSignatureError(TokenInvalidError):
    """The token signature does not verify with the provider's key."""

    code = "token_invalid_signature"


class TokenExpiredError(TokenInvalidError):
    """The token's `exp` lies in the past (beyond the allowed clock skew)."""

    code = "token_expired"


class TokenNotYetValidError(TokenInvalidError):
    """The token's `nbf` or `iat` lies in the future (beyond the allowed clock skew)."""

    code = "token_not_yet_valid"


class TokenWrongIssuerError(TokenInvalidError):
    """The token's `iss` is not the issuer of the configured provider."""

    code = "token_wrong_issuer"


class TokenWrongAudienceError(TokenInvalidError):
    """The token was issued for another client or API."""

    code = "token_wrong_audience"


class TokenRejectedByProviderError(TokenInvalidError):
    """The userinfo endpoint rejected the token (revoked, or expired at the provider)."""

    code = "token_rejected"


class UserInfoSubjectMismatchError(OidcError):
    """The userinfo response names another subject than the access token."""

    code = "userinfo_subject_mismatch"


class EmailNotVerifiedError(OidcError):
    """The identity provider reports `email_verified=false` for the user."""

    code = "email_not_verified"
    http_status = 403


class ProviderUnavailableError(OidcError):
    """The identity provider did not answer, or answered with a server error."""

    code = "provider_unavailable"
    http_status = 503


class ProviderConfigurationError(OidcError):
    """The provider's discovery document or JWKS is unusable (missing field, issuer mismatch)."""

    code = "provider_misconfigured"
    http_status = 503
