"""Authorization and Connection: the OAuth flow with Klaviyo, the token store and the refreshing token provider.

- ``authorize(settings, ...)`` / ``revoke(settings, ...)``: the ``ipaas-klaviyo authorize`` / ``revoke`` steps
  (``flow``; the loopback redirect server is ``loopback``).
- ``TokenStore``: the tokens in a 0600 file, Fernet-encrypted with ``oauth.token_key`` (``store``).
- ``OAuthTokenProvider``: single-flight refresh before expiry and on 401; a dead refresh token moves it to
  ``needs_reauthorization`` until the token file holds new tokens (``provider``).
- ``oauth_auth`` / ``bind_runtime``: the service's bearer credential, and the pause/resume, error log and
  ``authorization_state`` gauge wiring (``service``).
"""

from consumer.oauth.flow import (
    AuthorizationRequest,
    CallbackReceiver,
    KlaviyoOAuth,
    OAuthConfig,
    OAuthError,
    PastedCallback,
    RefreshRefused,
    Reporter,
    RevokeResult,
    authorize,
    code_challenge,
    is_loopback,
    new_authorization_request,
    parse_callback,
    revoke,
)
from consumer.oauth.loopback import LoopbackReceiver
from consumer.oauth.provider import (
    AuthorizationState,
    OAuthTokenProvider,
    ReauthorizationRequired,
    StateListener,
)
from consumer.oauth.service import (
    OAuthBearerAuth,
    bind_runtime,
    kafka_reporter,
    oauth_auth,
    set_authorization_gauge,
)
from consumer.oauth.store import TokenSet, TokenStore, TokenStoreError

__all__ = [
    "AuthorizationRequest",
    "AuthorizationState",
    "CallbackReceiver",
    "KlaviyoOAuth",
    "LoopbackReceiver",
    "OAuthBearerAuth",
    "OAuthConfig",
    "OAuthError",
    "OAuthTokenProvider",
    "PastedCallback",
    "ReauthorizationRequired",
    "RefreshRefused",
    "Reporter",
    "RevokeResult",
    "StateListener",
    "TokenSet",
    "TokenStore",
    "TokenStoreError",
    "authorize",
    "bind_runtime",
    "code_challenge",
    "is_loopback",
    "kafka_reporter",
    "new_authorization_request",
    "oauth_auth",
    "parse_callback",
    "revoke",
    "set_authorization_gauge",
]
