"""The error catalog: every user-facing error and warning the integration raises.

Each entry's ``message`` is the exact text of the specification (the seed error catalog); users grep for it,
so nothing else in the service invents user-facing error text. ``CatalogError`` is the exception that
carries an entry, plus the facts the runtime needs to decide what to do with a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from consumer.errors import IntegrationError, Outage


class Flow(StrEnum):
    """The integration's flows, named as in the catalog."""

    AUTHORIZATION = "Authorization and Connection"
    ADD_PROFILE_FROM_IPAAS = "Add Klaviyo Profile FROM iPaaS.com"
    UPDATE_PROFILE_FROM_IPAAS = "Update Klaviyo Profile FROM iPaaS.com"
    ADD_PROFILE_TO_IPAAS = "Add Klaviyo Profile TO iPaaS.com"
    UPDATE_PROFILE_TO_IPAAS = "Update Klaviyo Profile TO iPaaS.com"
    ADD_PROFILE_ADDRESS_TO_IPAAS = "Add Klaviyo Profile Address TO iPaaS.com"
    UPDATE_PROFILE_ADDRESS_TO_IPAAS = "Update Klaviyo Profile Address TO iPaaS.com"
    PLACED_ORDER_FROM_IPAAS = "Add Klaviyo Placed Order Event FROM iPaaS.com"
    ORDERED_PRODUCT_FROM_IPAAS = "Add Klaviyo Ordered Product Event FROM iPaaS.com"
    ALL = "Klaviyo API Response Errors (all flows)"
    SERVICE = "Service"  # the service's own entries (not in the seed): unreadable records, unexpected errors

    @property
    def slug(self) -> str:
        """A short, stable identifier for metric labels and headers."""
        return _FLOW_SLUGS[self]

    @classmethod
    def slug_of(cls, text: str) -> str:
        """The slug of the flow ``text`` names (by slug, catalog name or member name, any case); any other text
        trimmed and lower-cased (a command-line filter keeps what it was given)."""
        wanted = text.strip().lower()
        for flow in cls:
            if wanted in (flow.slug, flow.value.lower(), flow.name.lower()):
                return flow.slug
        return wanted


_FLOW_SLUGS = {
    Flow.AUTHORIZATION: "authorization",
    Flow.ADD_PROFILE_FROM_IPAAS: "add_profile_from_ipaas",
    Flow.UPDATE_PROFILE_FROM_IPAAS: "update_profile_from_ipaas",
    Flow.ADD_PROFILE_TO_IPAAS: "add_profile_to_ipaas",
    Flow.UPDATE_PROFILE_TO_IPAAS: "update_profile_to_ipaas",
    Flow.ADD_PROFILE_ADDRESS_TO_IPAAS: "add_profile_address_to_ipaas",
    Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS: "update_profile_address_to_ipaas",
    Flow.PLACED_ORDER_FROM_IPAAS: "placed_order_from_ipaas",
    Flow.ORDERED_PRODUCT_FROM_IPAAS: "ordered_product_from_ipaas",
    Flow.ALL: "all",
    Flow.SERVICE: "service",
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One entry of the error catalog.

    ``operator_hint`` is for whoever runs the service themselves, where ``action`` sends a subscriber to iPaaS.com
    Support: the setting or command that fixes it.
    """

    code: str
    title: str
    severity: Severity
    flow: Flow
    message: str
    meaning: str
    action: str
    operator_hint: str | None = None


_SUPPORT = "contact iPaaS.com Support at support@ipaas.com"

AUTHORIZATION_DATA_MISSING = CatalogEntry(
    code="AUTHORIZATION_DATA_MISSING",
    title="Authorization Data Missing",
    severity=Severity.ERROR,
    flow=Flow.AUTHORIZATION,
    message="The authorization could not be completed because the data returned from Klaviyo was missing.",
    meaning="The integration started the OAuth authorization with Klaviyo but Klaviyo did not return the "
    "expected response, or the response did not include the temporary authorization code the integration "
    "needs to continue.",
    action="Start the Authorize step again from the integration's connection settings. If the authorization "
    "repeatedly fails to return data, confirm the Klaviyo account is active and reachable, then "
    f"{_SUPPORT}.",
    operator_hint="Run `ipaas-klaviyo authorize` again (with --paste when the browser cannot reach "
    "oauth.redirect_url); check that oauth.redirect_url (IPAAS_KLAVIYO_OAUTH__REDIRECT_URL) is the redirect URL "
    "registered for the Klaviyo app and that klaviyo.base_url is Klaviyo's.",
)
AUTHORIZATION_CODE_MISSING = CatalogEntry(
    code="AUTHORIZATION_CODE_MISSING",
    title="Authorization Code Missing",
    severity=Severity.ERROR,
    flow=Flow.AUTHORIZATION,
    message="The authorization could not be completed because the authorization code from Klaviyo was missing.",
    meaning="Klaviyo returned a response, but it did not contain the temporary code that the integration "
    "exchanges for a permanent token, or it did not contain the matching security value the exchange requires.",
    action="Retry the Authorize step. Avoid reusing an old authorization link or a stale browser tab, because "
    f"the temporary code is single-use and short-lived. If the problem continues, {_SUPPORT}.",
    operator_hint="Run `ipaas-klaviyo authorize` again and approve in the browser tab it opens; "
    "oauth.redirect_url (IPAAS_KLAVIYO_OAUTH__REDIRECT_URL) must be the redirect URL registered for the Klaviyo app.",
)
CLIENT_ID_NOT_CONFIGURED = CatalogEntry(
    code="CLIENT_ID_NOT_CONFIGURED",
    title="Client ID Not Configured",
    severity=Severity.ERROR,
    flow=Flow.AUTHORIZATION,
    message="The authorization could not be completed because the Client ID is not configured for this "
    "Klaviyo integration version.",
    meaning="The integration version is missing the Client ID value it needs to identify itself to Klaviyo "
    "during authorization.",
    action="This value is configured at the integration-version level and is not editable by subscribers. "
    f"{_SUPPORT[0].upper()}{_SUPPORT[1:]} so the missing configuration can be applied.",
    operator_hint="Set oauth.client_id (IPAAS_KLAVIYO_OAUTH__CLIENT_ID) to the Client ID of your "
    "Klaviyo OAuth app, then run `ipaas-klaviyo authorize`; `ipaas-klaviyo config check` confirms it.",
)
CLIENT_SECRET_NOT_CONFIGURED = CatalogEntry(
    code="CLIENT_SECRET_NOT_CONFIGURED",
    title="Client Secret Not Configured",
    severity=Severity.ERROR,
    flow=Flow.AUTHORIZATION,
    message="The authorization could not be completed because the Client Secret is not configured for this "
    "Klaviyo integration version.",
    meaning="The integration version is missing the Client Secret value it needs to authenticate with "
    "Klaviyo during the token exchange.",
    action="This value is configured at the integration-version level and is not editable by subscribers. "
    f"{_SUPPORT[0].upper()}{_SUPPORT[1:]}.",
    operator_hint="Set oauth.client_secret (IPAAS_KLAVIYO_OAUTH__CLIENT_SECRET) to the Client "
    "Secret of your Klaviyo OAuth app, then run `ipaas-klaviyo authorize`.",
)
REDIRECT_URL_NOT_CONFIGURED = CatalogEntry(
    code="REDIRECT_URL_NOT_CONFIGURED",
    title="Redirect URL Not Configured",
    severity=Severity.ERROR,
    flow=Flow.AUTHORIZATION,
    message="The authorization could not be completed because the Redirect URL is not configured for this "
    "Klaviyo integration version.",
    meaning="The integration version is missing the Redirect URL that Klaviyo returns the subscriber to after "
    "they approve access. Without it, the authorization cannot complete.",
    action="This value is configured at the integration-version level and is not editable by subscribers. "
    f"{_SUPPORT[0].upper()}{_SUPPORT[1:]}.",
    operator_hint="Set oauth.redirect_url (IPAAS_KLAVIYO_OAUTH__REDIRECT_URL) to a redirect URL "
    "registered for your Klaviyo OAuth app (a loopback URL such as http://127.0.0.1:8765/callback works on this "
    "machine), then run `ipaas-klaviyo authorize`.",
)
TOKEN_EXCHANGE_FAILED = CatalogEntry(
    code="TOKEN_EXCHANGE_FAILED",
    title="Token Exchange Failed",
    severity=Severity.ERROR,
    flow=Flow.AUTHORIZATION,
    message="The authorization could not be completed because the temporary code could not be exchanged for "
    "an access token.",
    meaning="The integration received a valid authorization code from Klaviyo but Klaviyo declined to exchange "
    "it for a permanent access token. This usually points to a mismatch in the configured authorization "
    "values or an expired or already-used code.",
    action="Retry the Authorize step from the beginning so a fresh code is issued. If the exchange continues to "
    f"fail, {_SUPPORT} so the integration's authorization configuration can be reviewed.",
    operator_hint="The settings oauth.client_id, oauth.client_secret and oauth.redirect_url "
    "(IPAAS_KLAVIYO_OAUTH__CLIENT_ID, __CLIENT_SECRET, __REDIRECT_URL) must be those of the Klaviyo app; fix them, "
    "then run `ipaas-klaviyo authorize` again.",
)
PROFILE_COULD_NOT_BE_CREATED = CatalogEntry(
    code="PROFILE_COULD_NOT_BE_CREATED",
    title="Profile Could Not Be Created",
    severity=Severity.ERROR,
    flow=Flow.ADD_PROFILE_FROM_IPAAS,
    message="The Klaviyo profile could not be created because a required mapping field is missing or incomplete.",
    meaning="The integration assembled the outbound profile but Klaviyo did not return a created profile, or a "
    "required value was not present, so the profile was not created.",
    action="Open the Customer mapping for this flow and confirm that the identifier fields are mapped and "
    "populated on the source record. At least one identifier, normally Email, is required for Klaviyo to "
    "create and match a profile. Correct the mapping or the source data, then resend the record. If the "
    f"mapping is complete and the error persists, {_SUPPORT}.",
    operator_hint="The Customer mapping is add_profile_from_ipaas.yaml in mapping_dir "
    "(IPAAS_KLAVIYO_MAPPING_DIR; the shipped defaults otherwise); after fixing it or the source record, "
    "`ipaas-klaviyo dlq replay --code PROFILE_COULD_NOT_BE_CREATED`.",
)
COULD_NOT_LINK_TO_EXISTING_PROFILE = CatalogEntry(
    code="COULD_NOT_LINK_TO_EXISTING_PROFILE",
    title="Could Not Link to Existing Profile",
    severity=Severity.WARNING,
    flow=Flow.ADD_PROFILE_FROM_IPAAS,
    message="The integration could not automatically link this record to an existing Klaviyo profile by email "
    "address. This may result in duplicate profile records.",
    meaning="When sending a Customer outbound, the integration looks for an existing Klaviyo profile with the "
    "same email so it can link to it instead of creating a duplicate. The automatic link did not succeed, so "
    "a separate profile may be created.",
    action="Review the affected profile in Klaviyo for a possible duplicate. Email matching in Klaviyo is "
    "exact, so profiles that differ only by letter case or formatting may not link automatically. If "
    "duplicates appear, reconcile them in Klaviyo. No subscriber action is required to clear the warning itself.",
)
PROFILE_COULD_NOT_BE_UPDATED = CatalogEntry(
    code="PROFILE_COULD_NOT_BE_UPDATED",
    title="Profile Could Not Be Updated",
    severity=Severity.ERROR,
    flow=Flow.UPDATE_PROFILE_FROM_IPAAS,
    message="The Klaviyo profile could not be updated because a required mapping field is missing or incomplete.",
    meaning="The integration attempted to update the linked Klaviyo profile but Klaviyo did not return an "
    "updated profile, or a required value was missing.",
    action="Confirm the profile mapping is complete and that the source Customer carries the values needed to "
    "identify the profile. Correct the mapping or source data and resend the record. If the error persists "
    f"with a complete mapping, {_SUPPORT}.",
    operator_hint="The mapping is update_profile_from_ipaas.yaml in mapping_dir "
    "(IPAAS_KLAVIYO_MAPPING_DIR); after fixing it or the source record, "
    "`ipaas-klaviyo dlq replay --code PROFILE_COULD_NOT_BE_UPDATED`.",
)
COULD_NOT_LINK_TO_EXISTING_CUSTOMER = CatalogEntry(
    code="COULD_NOT_LINK_TO_EXISTING_CUSTOMER",
    title="Could Not Link to Existing Customer",
    severity=Severity.WARNING,
    flow=Flow.ADD_PROFILE_TO_IPAAS,
    message="The integration could not automatically link this profile to an existing iPaaS.com Customer by "
    "email address. This may result in duplicate customer records.",
    meaning="When a Klaviyo profile is brought inbound, the integration tries to match it to an existing "
    "iPaaS.com Customer by email so a duplicate is not created. The automatic link did not succeed.",
    action="Review the affected Customer in iPaaS.com for a possible duplicate. Because email matching is "
    "exact, addresses that differ only in letter case or formatting may not match. Reconcile any duplicate "
    "Customers in iPaaS.com. No subscriber action is required to clear the warning itself.",
)
ADDRESS_VALUE_COULD_NOT_BE_READ = CatalogEntry(
    code="ADDRESS_VALUE_COULD_NOT_BE_READ",
    title="Address Value Could Not Be Read",
    severity=Severity.ERROR,
    flow=Flow.ADD_PROFILE_ADDRESS_TO_IPAAS,
    message="A mapped address or subscription value could not be read from the Klaviyo profile.",
    meaning="A mapping references a position or property within a list on the Klaviyo profile, such as an "
    "address entry or a subscription detail, that is not present on the record being processed, so the value "
    "could not be read.",
    action="Review the mapping that reads the list value and confirm it targets a position and property that "
    "the source profiles actually contain. Profiles vary in how many entries they carry, so a mapping that "
    "assumes a specific position can fail on records that have fewer entries. Adjust the mapping to match "
    "the data, then resend the record.",
)
ORDER_EVENT_COULD_NOT_BE_CREATED = CatalogEntry(
    code="ORDER_EVENT_COULD_NOT_BE_CREATED",
    title="Order Event Could Not Be Created",
    severity=Severity.ERROR,
    flow=Flow.PLACED_ORDER_FROM_IPAAS,
    message="The Klaviyo order event could not be created because a required mapping field is missing or "
    "incomplete.",
    meaning="The integration could not build the order event because one or more required values were "
    "missing. An order event requires an event name, the Klaviyo profile it belongs to, and a unique order "
    "identifier; if any of these is not mapped or not populated, the event is not created.",
    action="Open the mapping for this flow and confirm the event name, profile reference, and unique order "
    "identifier are mapped and populated on the source Transaction. Correct the mapping or source data and "
    f"resend the record. If the mapping is complete and the error persists, {_SUPPORT}.",
    operator_hint="The mapping is placed_order_from_ipaas.yaml in mapping_dir "
    "(IPAAS_KLAVIYO_MAPPING_DIR); after fixing it or the source record, "
    "`ipaas-klaviyo dlq replay --code ORDER_EVENT_COULD_NOT_BE_CREATED`.",
)
CUSTOMER_REQUIRED_FOR_ORDER = CatalogEntry(
    code="CUSTOMER_REQUIRED_FOR_ORDER_COULD_NOT_BE_CREATED",
    title="Customer Required for Order Could Not Be Created",
    severity=Severity.ERROR,
    flow=Flow.PLACED_ORDER_FROM_IPAAS,
    message="The customer needed for this order could not be created, which prevented the order from "
    "transferring.",
    meaning="Before sending an order, the integration ensures the related customer exists in Klaviyo. The "
    "customer transfer that the order depends on failed, so the order could not proceed.",
    action="Review the Error Logs for the related Customer transfer to find why the customer could not be "
    "created, and resolve that underlying error first, typically a missing or incomplete identifier on the "
    "customer record. Once the customer transfers successfully, resend the order.",
)
PRODUCT_EVENT_COULD_NOT_BE_CREATED = CatalogEntry(
    code="PRODUCT_EVENT_COULD_NOT_BE_CREATED",
    title="Product Event Could Not Be Created",
    severity=Severity.ERROR,
    flow=Flow.ORDERED_PRODUCT_FROM_IPAAS,
    message="The Klaviyo ordered product event could not be created because a required mapping field is "
    "missing or incomplete.",
    meaning="The integration could not build the ordered product event because one or more required values "
    "were missing. Like the order event, a product event requires an event name, the Klaviyo profile it "
    "belongs to, and a unique identifier.",
    action="Confirm the event name, profile reference, and unique identifier are mapped and populated on the "
    f"source line item, then resend the record. If the mapping is complete and the error persists, {_SUPPORT}.",
    operator_hint="The mapping is ordered_product_from_ipaas.yaml in mapping_dir "
    "(IPAAS_KLAVIYO_MAPPING_DIR); after fixing it or the source record, "
    "`ipaas-klaviyo dlq replay --code PRODUCT_EVENT_COULD_NOT_BE_CREATED`.",
)
KLAVIYO_REJECTED_REQUEST = CatalogEntry(
    code="KLAVIYO_REJECTED_REQUEST",
    title="Klaviyo Rejected the Request",
    severity=Severity.ERROR,
    flow=Flow.ALL,
    message="Error calling Klaviyo",
    meaning="Klaviyo received the request but rejected it. Common causes include a value that fails Klaviyo's "
    "validation, a permissions or scope limitation on the connected account, a record that no longer exists "
    "in Klaviyo, or a rate limit being exceeded.",
    action="Read the detail Klaviyo returned in the Error Logs entry; it usually names the field or condition "
    "that caused the rejection. For a validation message, correct the mapped value or source data and resend. "
    "For a permissions or scope message, confirm the connected Klaviyo account has the access the operation "
    "requires and re-authorize if needed. For a rate-limit message, allow the transfer to retry after a short "
    f"interval. If the cause is unclear from Klaviyo's detail, {_SUPPORT}.",
    operator_hint="A permission or scope problem is the credential: klaviyo.api_key "
    "(IPAAS_KLAVIYO_KLAVIYO__API_KEY) and its scopes, or oauth.scopes and `ipaas-klaviyo authorize`; a revision "
    "problem is klaviyo.revision. Then `ipaas-klaviyo dlq replay --code KLAVIYO_REJECTED_REQUEST`.",
)
KLAVIYO_CONNECTION_ERROR = CatalogEntry(
    code="KLAVIYO_CONNECTION_ERROR",
    title="Klaviyo Connection Error",
    severity=Severity.ERROR,
    flow=Flow.ALL,
    message="An error occurred while contacting Klaviyo",
    meaning="The integration could not complete the request to Klaviyo because of a transport or connectivity "
    "problem rather than a data validation issue.",
    action="This is often transient. Allow the transfer to retry. If connection errors persist across multiple "
    "attempts, confirm the API Url in the integration's settings is correct and that Klaviyo is reachable, "
    f"then {_SUPPORT}.",
    operator_hint="The API Url is klaviyo.base_url (IPAAS_KLAVIYO_KLAVIYO__BASE_URL); check it, "
    "and the network or proxy between this host and Klaviyo, with `ipaas-klaviyo config check`.",
)

# --- the service's own entries (not in the seed error catalog) -------------------------------------------------
RECORD_NOT_READABLE = CatalogEntry(
    code="RECORD_NOT_READABLE",
    title="Record Could Not Be Read",
    severity=Severity.ERROR,
    flow=Flow.SERVICE,
    message="The change record could not be read",
    meaning="The record on the topic is not a change event the integration understands: it is not UTF-8 or "
    "JSON, its envelope or event type is unknown, it is too large, or it does not match the record's schema.",
    action="The record was set aside on the dead-letter topic with its original bytes. Fix the producer of the "
    "record (the detail names the problem), then replay the dead letter with `ipaas-klaviyo dlq replay`.",
)
IPAAS_REJECTED_REQUEST = CatalogEntry(
    code="IPAAS_REJECTED_REQUEST",
    title="iPaaS.com Rejected the Request",
    severity=Severity.ERROR,
    flow=Flow.SERVICE,
    message="Error calling iPaaS.com",
    meaning="iPaaS.com received the request but rejected it: a value failed its validation, the API token lacks "
    "a permission, or the record no longer exists.",
    action="Read the detail iPaaS.com returned in the Error Logs entry; correct the mapped value or the source data "
    f"and resend, or confirm the integration's API token and its permissions. If the cause is unclear, {_SUPPORT}.",
    operator_hint="The token is ipaas.api_token (IPAAS_KLAVIYO_IPAAS__API_TOKEN) and the system "
    "id ipaas.system_id; after fixing, `ipaas-klaviyo dlq replay --code IPAAS_REJECTED_REQUEST`.",
)
IPAAS_CONNECTION_ERROR = CatalogEntry(
    code="IPAAS_CONNECTION_ERROR",
    title="iPaaS.com Connection Error",
    severity=Severity.ERROR,
    flow=Flow.SERVICE,
    message="An error occurred while contacting iPaaS.com",
    meaning="The integration could not complete the request to iPaaS.com because of a transport or connectivity "
    "problem rather than a data validation issue.",
    action="This is often transient. Allow the transfer to retry. If connection errors persist, confirm the "
    f"iPaaS.com API URL in the integration's settings and that iPaaS.com is reachable, then {_SUPPORT}.",
    operator_hint="The API URL is ipaas.base_url (IPAAS_KLAVIYO_IPAAS__BASE_URL); check it, and "
    "the network or proxy between this host and iPaaS.com, with `ipaas-klaviyo config check`.",
)
COULD_NOT_LINK_PROFILE_BY_PHONE = CatalogEntry(
    code="COULD_NOT_LINK_PROFILE_BY_PHONE",
    title="Could Not Link to Existing Profile by Phone Number",
    severity=Severity.WARNING,
    flow=Flow.SERVICE,
    message="The integration could not automatically link this record to an existing Klaviyo profile by phone "
    "number. This may result in duplicate profile records",
    meaning="The Customer's phone number already belongs to another Klaviyo profile (Klaviyo keeps a phone number "
    "on one profile only), and that profile is not the Customer's. The Customer's profile was created or updated "
    "without the phone number. (The specification names only the email case; this is the service's own entry for "
    "a phone number.)",
    action="Review both profiles in Klaviyo for a possible duplicate (the detail names the other profile). If they "
    "are the same person, merge them in Klaviyo; otherwise correct the phone number on the source Customer and "
    "resend the record.",
)
DESTINATION_RECOVERED = CatalogEntry(
    code="DESTINATION_RECOVERED",
    title="Connection Restored",
    severity=Severity.INFO,
    flow=Flow.SERVICE,
    message="The connection was restored and the transfers that waited for it are being sent",
    meaning="A destination (Klaviyo or iPaaS.com) that was unreachable, refused the credential or answered "
    "unexpectedly answers again. The transfers that needed it waited instead of failing; nothing was set aside "
    "for the outage. The detail says how long it lasted and how many records waited.",
    action="No action is needed. If outages recur, look at the error log entry that began the outage.",
)
EARLIER_CHANGE_DEAD_LETTERED = CatalogEntry(
    code="EARLIER_CHANGE_DEAD_LETTERED",
    title="Earlier Change Waiting on the Dead-Letter Topic",
    severity=Severity.WARNING,
    flow=Flow.SERVICE,
    message="A later change of this record was sent while an earlier change of it waits on the dead-letter topic",
    meaning="An earlier change of the same record failed and was set aside on the dead-letter topic. This later "
    "change succeeded, so the destination holds its values; whatever only the earlier change carried is missing "
    "until that dead letter is dealt with, and replaying it as it is would send the older values again. The "
    "warning is best effort: the service remembers the dead letters it wrote since it started (a bounded number "
    "per topic), so after a restart a later change of an older dead letter is not reported.",
    action="Find the record's dead letters with `ipaas-klaviyo dlq list --key <key>` (the detail names the one "
    "that waits). If the later change carries everything the earlier one did, nothing is missing: `ipaas-klaviyo "
    "dlq replay --skip-superseded` leaves such dead letters out. Otherwise fix the cause the dead letter names, "
    "replay it, then resend the record's latest change so the destination ends with its newest values.",
)
UNEXPECTED_ERROR = CatalogEntry(
    code="UNEXPECTED_ERROR",
    title="Unexpected Error",
    severity=Severity.ERROR,
    flow=Flow.SERVICE,
    message="The integration failed unexpectedly while handling the record",
    meaning="An error the integration does not describe in its catalog stopped the transfer.",
    action="The record was retried and then set aside on the dead-letter topic. Report the error log entry to "
    "the integration's maintainers; once fixed, replay the dead letter with `ipaas-klaviyo dlq replay`.",
    operator_hint="`ipaas-klaviyo errors --code UNEXPECTED_ERROR --full` shows the exception; the "
    "service's JSON log on stderr has its traceback.",
)

ENTRIES: tuple[CatalogEntry, ...] = (
    AUTHORIZATION_DATA_MISSING,
    AUTHORIZATION_CODE_MISSING,
    CLIENT_ID_NOT_CONFIGURED,
    CLIENT_SECRET_NOT_CONFIGURED,
    REDIRECT_URL_NOT_CONFIGURED,
    TOKEN_EXCHANGE_FAILED,
    PROFILE_COULD_NOT_BE_CREATED,
    COULD_NOT_LINK_TO_EXISTING_PROFILE,
    COULD_NOT_LINK_PROFILE_BY_PHONE,
    PROFILE_COULD_NOT_BE_UPDATED,
    COULD_NOT_LINK_TO_EXISTING_CUSTOMER,
    ADDRESS_VALUE_COULD_NOT_BE_READ,
    ORDER_EVENT_COULD_NOT_BE_CREATED,
    CUSTOMER_REQUIRED_FOR_ORDER,
    PRODUCT_EVENT_COULD_NOT_BE_CREATED,
    KLAVIYO_REJECTED_REQUEST,
    KLAVIYO_CONNECTION_ERROR,
    RECORD_NOT_READABLE,
    IPAAS_REJECTED_REQUEST,
    IPAAS_CONNECTION_ERROR,
    DESTINATION_RECOVERED,
    EARLIER_CHANGE_DEAD_LETTERED,
    UNEXPECTED_ERROR,
)
BY_CODE: dict[str, CatalogEntry] = {entry.code: entry for entry in ENTRIES}


class CatalogError(IntegrationError):
    """A failure described by a catalog entry.

    ``detail`` is what the far side said (Klaviyo's error detail, a connection error's text); it is appended
    to the message in parentheses, as the catalog's API entries describe. ``retryable`` says whether trying
    again may help; ``outage`` (with ``destination``) says the destination failed, not the record (see
    ``consumer.errors``). Never put secrets into ``detail``.
    """

    flow: Flow

    def __init__(
        self,
        entry: CatalogEntry,
        detail: str | None = None,
        *,
        flow: Flow | None = None,
        retryable: bool = False,
        destination: str | None = None,
        outage: Outage | None = None,
        http_status: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        cause: CatalogError | None = None,
    ) -> None:
        self.entry = entry
        self.detail = detail
        self.flow = flow or entry.flow
        self.retryable = retryable
        self.destination = destination
        self.outage = outage
        self.http_status = http_status
        self.error_code = error_code
        self.retry_after = retry_after
        self.cause = cause
        super().__init__(self.message)

    @property
    def code(self) -> str:  # type: ignore[override]
        return self.entry.code

    @property
    def severity(self) -> Severity:
        return self.entry.severity

    @property
    def what_to_do(self) -> str | None:
        return self.entry.action

    @property
    def message(self) -> str:
        """The catalog message, with the far side's detail where the entry carries one."""
        if self.detail and self.entry.flow in (Flow.ALL, Flow.SERVICE):
            return f"{self.entry.message} ({self.detail})"
        return self.entry.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


def entry_for_code(code: str) -> CatalogEntry:
    """The catalog entry of an error code; unreadable records (``POISON_PILL_*``) and unknown codes have the
    service's own entries."""
    if code in BY_CODE:
        return BY_CODE[code]
    if code.startswith("POISON_PILL_"):
        return RECORD_NOT_READABLE
    return UNEXPECTED_ERROR
