"""Klaviyo: the REST client the flows use, its models, errors, auth strategies and endpoint classes.

The in-process/standalone Klaviyo simulator for tests and benchmarks lives in ``simulators.klaviyo``.
"""

from consumer.klaviyo.auth import ApiKeyAuth, Auth, BearerTokenAuth, TokenProvider
from consumer.klaviyo.client import KlaviyoClient
from consumer.klaviyo.errors import KlaviyoConnectionError, KlaviyoRejected
from consumer.klaviyo.models import (
    BulkImportError,
    BulkImportJob,
    Location,
    NewEvent,
    PatchProperties,
    Profile,
    ProfileAttributes,
    ProfilePage,
    UpsertResult,
)
from consumer.klaviyo.ratelimits import ENDPOINTS, Endpoint, EndpointLimit

__all__ = [
    "ENDPOINTS",
    "ApiKeyAuth",
    "Auth",
    "BearerTokenAuth",
    "BulkImportError",
    "BulkImportJob",
    "Endpoint",
    "EndpointLimit",
    "KlaviyoClient",
    "KlaviyoConnectionError",
    "KlaviyoRejected",
    "Location",
    "NewEvent",
    "PatchProperties",
    "Profile",
    "ProfileAttributes",
    "ProfilePage",
    "TokenProvider",
    "UpsertResult",
]
