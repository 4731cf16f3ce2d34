"""iPaaS.com: the REST client the TO-iPaaS.com flows (and notify-then-fetch hooks) use, its models and errors.

The in-process/standalone iPaaS.com simulator for tests and the demo lives in ``simulators.ipaas``.
"""

from consumer.ipaas.client import DEFAULT_SYSTEM_ID, OPERATIONS, IpaasClient, Operation
from consumer.ipaas.errors import IpaasConnectionError, IpaasRejected
from consumer.ipaas.models import (
    ADDRESS_TABLE,
    CUSTOMER_TABLE,
    TRANSACTION_TABLE,
    AddressWrite,
    CustomerWrite,
    ExternalIdLookup,
    ExternalIdUpdate,
)

__all__ = [
    "ADDRESS_TABLE",
    "CUSTOMER_TABLE",
    "DEFAULT_SYSTEM_ID",
    "OPERATIONS",
    "TRANSACTION_TABLE",
    "AddressWrite",
    "CustomerWrite",
    "ExternalIdLookup",
    "ExternalIdUpdate",
    "IpaasClient",
    "IpaasConnectionError",
    "IpaasRejected",
    "Operation",
]
