"""Raw cloud cost exports -> FOCUS-named UsageRecords: AWS CUR, Azure EA/MCA cost details, OCI cost reports.

Each raw row is first mapped to a row of FOCUS column names, following the FinOps Foundation's
focus_converters (https://github.com/finopsfoundation/focus_converters, ``focus_converter_base/
focus_converter/conversion_configs/<provider>/``), then built into a UsageRecord by the same code as a
FOCUS file, so GPU recognition, rejection reasons and idempotency keys behave alike. The mapping of each
column, with the converter config it follows and where flopwise deviates, is in docs/ingest/focus.md.

All three stream their CSV one row at a time. Unmapped raw columns with a value are kept in ``x_extra``
under their raw names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING

from flopwise.errors import IngestError
from flopwise.meter.focus import (
    ParseReport,
    RowContext,
    RowError,
    open_csv,
    parse_decimal,
    record_from_focus_row,
)
from flopwise.meter.record import RejectedRow, UsageRecord

if TYPE_CHECKING:
    from flopwise.catalog import Catalog

__all__ = [
    "AWS_SERVICE_CATEGORY",
    "AZURE_SERVICE_CATEGORY",
    "parse_aws_cur",
    "parse_azure_cost_export",
    "parse_oci_cost_report",
]


def _invert(groups: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {code.lower(): category for category, codes in groups.items() for code in codes}


#: lineItem/ProductCode -> FOCUS ServiceCategory, after focus_converters
#: conversion_configs/aws/mapping_files/aws_category_mapping.csv (product codes only; the rows there whose
#: key is a marketing name ending in "*" never appear as a product code). Matched case-insensitively.
AWS_SERVICE_CATEGORY = _invert(
    {
        "AI and Machine Learning": (
            "AWSDeepRacer", "AmazonA2I", "AmazonCodeWhisperer", "AmazonDevOpsGuru", "AmazonEI", "AmazonForecast",
            "AmazonFraudDetector", "AmazonHealthLake", "AmazonKendra", "AmazonLex", "AmazonLookoutEquipment",
            "AmazonLookoutMetrics", "AmazonLookoutVision", "AmazonMonitron", "AmazonOmics", "AmazonPersonalize",
            "AmazonPolly", "AmazonRekognition", "AmazonSageMaker", "AmazonTextract", "comprehend", "transcribe",
            "translate",
        ),
        "Analytics": (
            "AWSCleanRooms", "AWSDataExchange", "AWSGlueElasticViews", "AWSGlue", "AWSLakeFormation",
            "AmazonAthena", "AmazonCloudSearch", "AmazonES", "AmazonFinSpace", "AmazonKinesisAnalytics",
            "AmazonKinesisFirehose", "AmazonKinesis", "AmazonMSK", "AmazonQuickSight", "ElasticMapReduce",
            "datapipeline",
        ),
        "Business Applications": (
            "A4B", "AWSSupplyChain", "AWSWickr", "AWSWisdom", "AmazonChimeBusinessCalling",
            "AmazonChimeCallMeAMCS", "AmazonChimeCallMe", "AmazonChimeDialInAMCS", "AmazonChimeDialin",
            "AmazonChimeFeatures", "AmazonChimeServices", "AmazonChimeVoiceConnector", "AmazonChime",
            "AmazonHoneycode", "AmazonPinpoint", "AmazonSES", "AmazonSWF", "AmazonWAM", "AmazonWorkDocs",
            "AmazonWorkLink", "AmazonWorkMail", "AmazonWorkSpacesWeb", "ContactLensAmazonConnect",
            "CustomerProfiles",
        ),
        "Compute": (
            "AWSAppRunner", "AWSLambda", "AWSOutposts", "AmazonEC2", "AmazonLightsail", "SimSpaceWeaver",
            "VMwareCloudOnAWS", "AmazonECRPublic", "AmazonECR", "AmazonECS", "AmazonEKS", "AmazonAppStream",
        ),
        "Databases": (
            "AmazonDocDB", "AmazonDynamoDB", "AmazonElastiCache", "AmazonMCS", "AmazonMemoryDB", "AmazonNeptune",
            "AmazonRDS", "AmazonRedshift", "AmazonTimestream",
        ),
        "Developer Tools": (
            "AWSAmplify", "AWSAppSync", "AWSCodeArtifact", "AWSCodeCommit", "AWSCodeDeploy", "AWSCodePipeline",
            "AWSDeviceFarm", "CodeBuild", "CodeCatalyst", "CodeGuru",
        ),
        "Integration": (
            "AWSQueueService", "AmazonMQ", "AmazonMWAA", "AmazonSNS", "AmazonStates", "AppFlow",
            "Amazon EventBridge", "AWSAppFabric",
        ),
        "Internet of Things": (
            "AWSGreengrass", "AWSIoT1Click", "AWSIoTAnalytics", "AWSIoTEvents", "AWSIoTFleetWise",
            "AWSIoTSiteWise", "AWSIoTThingsGraph", "AWSIoT", "IoTDeviceDefender", "IoTDeviceManagement",
            "IoTTwinMaker",
        ),
        "Management and Governance": (
            "AWSBudgets", "AWSCostExplorer", "AWSCloudFormation", "AWSCloudTrail", "AWSConfig",
            "AWSResilienceHub", "AWSServiceCatalog", "AWSSystemsManager", "AmazonCloudWatch", "AmazonGrafana",
            "AmazonPrometheus", "OpsWorks", "AWSBillingConductor",
        ),
        "Media": (
            "AWSElementalMediaConvert", "AWSElementalMediaLive", "AWSElementalMediaPackage",
            "AWSElementalMediaStore", "AWSElementalMediaTailor", "AWSMediaConnect", "AmazonETS", "AmazonIVS",
            "AmazonKinesisVideo", "nimble",
        ),
        "Migration": (
            "AWSApplicationMigrationSvc", "AWSDataSync", "AWSDatabaseMigrationSvc", "AWSM2", "AWSTransfer",
        ),
        "Networking": (
            "AWSCloudMap", "AWSCloudWAN", "AWSDataTransfer", "AWSDirectConnect", "AWSELB", "AWSGlobalAccelerator",
            "AWSNetworkFirewall", "AWSPrivate5G", "AmazonApiGateway", "AmazonCloudFront", "AmazonRoute53",
            "AmazonVPC",
        ),
        "Other": ("AmazonManagedBlockchain", "AmazonQLDB", "AmazonBraket", "AWSRoboMaker", "AWSGroundStation"),
        "Security": (
            "AWSCertificateManager", "AWSDirectoryService", "AWSFMS", "AWSSecretsManager", "AWSSecurityHub",
            "AWSShield", "AmazonCognitoSync", "AmazonCognito", "AmazonDetective", "AmazonGuardDuty",
            "AmazonInspectorV2", "AmazonInspector", "AmazonMacie", "AmazonSecurityLake",
            "AmazonVerifiedPermissions", "CloudHSM", "auditmanager", "awskms", "awswaf",
        ),
        "Storage": (
            "AWSBackup", "AWSElasticDisasterRecovery", "AWSStorageGatewayDeepArchive", "AWSStorageGateway",
            "AmazonEBS", "AmazonEFS", "AmazonFSx", "AmazonGlacier", "AmazonS3GlacierDeepArchive", "AmazonS3",
            "IngestionServiceSnowball", "SnowballExtraDays",
        ),
    }
)  # fmt: skip

#: ConsumedService -> FOCUS ServiceCategory, after focus_converters
#: conversion_configs/azure/mapping_files/azure_category_mapping.csv. Matched case-insensitively.
AZURE_SERVICE_CATEGORY = _invert(
    {
        "AI and Machine Learning": (
            "microsoft.machinelearningservices", "microsoft.cognitiveservices", "microsoft.botservice",
            "microsoft.machinelearning", "microsoft.databricks",
        ),
        "Analytics": (
            "microsoft.synapse", "microsoft.datalakeanalytics", "microsoft.kusto", "microsoft.streamanalytics",
            "microsoft.notebooks", "microsoft.hdinsight",
        ),
        "Compute": (
            "microsoft.compute", "microsoft.containerinstance", "microsoft.containerservice",
            "microsoft.classiccompute", "microsoft.avs", "microsoft.desktopvirtualization",
            "microsoft.serialconsole",
        ),
        "Databases": (
            "microsoft.dbformysql", "microsoft.dbforpostgressql", "microsoft.sql", "microsoft.sqlvirtualmachine",
            "microsoft.documentdb",
        ),
        "Developer Tools": (
            "microsoft.loadtestservice", "microsoft.automation", "microsoft.maps", "microsoft.diagnostics",
            "microsoft.devtestlab", "microsoft.resourcegraph", "microsoft.visualstudio",
        ),
        "Identity": ("microsoft.guestconfiguration", "microsoft.adhybridhealthservice", "microsoft.authorization"),
        "Integration": (
            "microsoft.apimanagement", "microsoft.datafactory", "microsoft.eventgrid", "microsoft.logic",
            "microsoft.servicebus", "microsoft.eventhub", "microsoft.servicefabric", "microsoft.servicelinker",
            "microsoft.datashare",
        ),
        "Internet of Things": ("microsoft.digitaltwins", "microsoft.mixedreality", "microsoft.iotsecurity"),
        "Management and Governance": (
            "microsoft.insights", "microsoft.operationalinsights", "microsoft.recoveryservices",
            "microsoft.operationsmanagement", "microsoft.changeanalysis", "microsoft.costmanagementexports",
            "microsoft.policyinsights", "microsoft.blueprint", "microsoft.advisor", "microsoft.alertsmanagement",
            "microsoft.costmanagement", "microsoft.resourcehealth", "microsoft.resourcenotifications",
        ),
        "Media": ("microsoft.media",),
        "Migration": ("microsoft.migrate", "microsoft.datamigration", "microsoft.offazure"),
        "Networking": (
            "microsoft.network", "microsoft.virtual network", "microsoft.classicnetwork", "microsoft.relay",
            "microsoft.domainregistration",
        ),
        "Other": (
            "microsoft.devices", "microsoft.management", "microsoft.notificationhubs",
            "microsoft.marketplacenotifications", "microsoft.maintenance", "microsoft.commerce",
            "microsoft.solutions", "microsoft.capacity", "microsoft.saas", "microsoft.portal",
            "microsoft.classicsubscription", "microsoft.consumption", "microsoft.marketplaceordering",
            "microsoft.resources", "microsoft.support",
        ),
        "Security": (
            "microsoft.keyvault", "microsoft.security", "microsoft.securityinsights", "microsoft.managedidentity",
        ),
        "Storage": (
            "microsoft.storagesync", "microsoft.storage", "microsoft.cache", "microsoft.datalakestore",
            "microsoft.storagecache", "microsoft.classicstorage", "microsoft.containerregistry",
        ),
        "Web": ("microsoft.appconfiguration", "microsoft.search", "microsoft.web", "microsoft.cdn"),
    }
)  # fmt: skip

#: OCI product/service -> FOCUS ServiceCategory. focus_converters has no OCI category map; this one is
#: flopwise's, from the service names in Oracle's cost report documentation.
OCI_SERVICE_CATEGORY = {
    "COMPUTE": "Compute",
    "BLOCK_STORAGE": "Storage",
    "OBJECTSTORE": "Storage",
    "FILE_STORAGE": "Storage",
    "NETWORK": "Networking",
    "LOAD_BALANCER": "Networking",
    "DATABASE": "Databases",
    "MYSQL": "Databases",
    "NOSQL": "Databases",
    "TELEMETRY": "Management and Governance",
    "LOGGING": "Management and Governance",
    "ORACLE_STREAMING_SERVICE": "Integration",
    "DATA_SCIENCE": "AI and Machine Learning",
    "GENERATIVE_AI": "AI and Machine Learning",
}

#: AWS lineItem/LineItemType -> FOCUS ChargeCategory (AWS CUR data dictionary, line item details)
_AWS_CHARGE_CATEGORY = {
    "Usage": "Usage",
    "DiscountedUsage": "Usage",
    "SavingsPlanCoveredUsage": "Usage",
    "Tax": "Tax",
    "Credit": "Credit",
    "Refund": "Credit",
    "BundledDiscount": "Credit",
    "Discount": "Credit",
    "EdpDiscount": "Credit",
    "PrivateRateDiscount": "Credit",
    "SavingsPlanNegation": "Adjustment",
    "RIFee": "Purchase",
    "Fee": "Purchase",
    "SavingsPlanRecurringFee": "Purchase",
    "SavingsPlanUpfrontFee": "Purchase",
}


#: raw tag columns, already gathered into Tags
_TAG_PREFIXES = ("resourceTags/", "tags/")


class _Raw:
    """One raw row with helpers that read a column as text or Decimal (empty -> None)."""

    __slots__ = ("row",)

    def __init__(self, row: Mapping[str, str]) -> None:
        self.row = row

    def text(self, column: str) -> str | None:
        value = self.row.get(column)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def number(self, column: str) -> Decimal | None:
        value = self.text(column)
        return None if value is None else parse_decimal(column, value)


def _set(out: dict[str, str | None], name: str, value: object) -> None:
    if value is not None and value != "":
        out[name] = format(value, "f") if isinstance(value, Decimal) else str(value)


def _parse_raw(
    lines: Iterable[str],
    *,
    source: str,
    path: str,
    catalog: Catalog | None,
    assume_tz: str | tzinfo | None,
    report: ParseReport | None,
    rejected: list[RejectedRow] | None,
    required: tuple[str | tuple[str, ...], ...],
    hint: str,
    to_focus: Callable[[_Raw], dict[str, str | None]],
    mapped: frozenset[str],
    identity: tuple[tuple[str, str], ...] = (),
) -> Iterator[UsageRecord]:
    """The shared loop: header check, raw row -> FOCUS-named row -> UsageRecord, rejections.

    *identity*: (raw column, FOCUS-row name) pairs that identify a row when the header has the raw
    columns (AWS's identity/LineItemId); otherwise every non-measure column does.
    """
    report = ParseReport.begin(report, rejected, path, source)
    report.version = source
    header, rows = open_csv(lines, path, report)
    missing = [
        " or ".join(c) if isinstance(c, tuple) else c
        for c in required
        if not any(name in header for name in (c if isinstance(c, tuple) else (c,)))
    ]
    if missing:
        raise IngestError(path, 1, f"not a {hint}: missing column(s) {', '.join(missing)}")
    key_columns = tuple(name for column, name in identity if column in header) or None
    ctx = RowContext.build(source, assume_tz, catalog, identity_columns=key_columns)
    for line, row in rows:
        try:
            focus_row = to_focus(_Raw(row))
            for name, value in row.items():
                if (
                    name not in mapped
                    and value.strip()
                    and name not in focus_row
                    and not name.startswith(_TAG_PREFIXES)
                ):
                    focus_row[name] = value
            record = record_from_focus_row(focus_row, ctx)
        except RowError as err:
            report.reject(line, str(err), ",".join(row.values()))
            continue
        report.records += 1
        yield record


# --- AWS Cost and Usage Report (legacy CUR, lineItem/... columns) -------------------------------------------

_AWS_MAPPED = frozenset(
    {
        "lineItem/UsageStartDate", "lineItem/UsageEndDate", "lineItem/UnblendedCost", "lineItem/NetUnblendedCost",
        "lineItem/LineItemType", "lineItem/CurrencyCode", "lineItem/ProductCode", "lineItem/ResourceId",
        "lineItem/UsageAccountId", "lineItem/UsageAmount", "lineItem/LineItemDescription", "lineItem/UsageType",
        "lineItem/Operation", "lineItem/AvailabilityZone", "bill/PayerAccountId", "bill/BillingPeriodStartDate",
        "bill/BillingPeriodEndDate", "bill/InvoiceId", "product/region", "product/regionCode", "product/sku",
        "product/instanceType", "product/ProductName", "pricing/unit", "pricing/publicOnDemandCost",
        "pricing/publicOnDemandRate", "pricing/term", "reservation/EffectiveCost",
        "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod", "reservation/UnusedRecurringFee",
        "reservation/ReservationARN", "savingsPlan/SavingsPlanEffectiveCost", "savingsPlan/TotalCommitmentToDate",
        "savingsPlan/UsedCommitment", "savingsPlan/SavingsPlanARN", "identity/LineItemId",
        "identity/TimeInterval",
    }
)  # fmt: skip


def _aws_effective_cost(raw: _Raw, line_item_type: str, unblended: Decimal | None) -> Decimal | None:
    """EffectiveCost by line item type, as focus_converters aws/effective_cost_S001.yaml."""
    zero = Decimal(0)
    if line_item_type == "SavingsPlanCoveredUsage":
        return raw.number("savingsPlan/SavingsPlanEffectiveCost")
    if line_item_type == "SavingsPlanRecurringFee":
        total, used = (
            raw.number("savingsPlan/TotalCommitmentToDate"),
            raw.number("savingsPlan/UsedCommitment"),
        )
        return None if total is None or used is None else total - used
    if line_item_type in ("SavingsPlanNegation", "SavingsPlanUpfrontFee"):
        return zero
    if line_item_type == "DiscountedUsage":
        return raw.number("reservation/EffectiveCost")
    if line_item_type == "RIFee":
        fee = raw.number("reservation/UnusedAmortizedUpfrontFeeForBillingPeriod") or zero
        return fee + (raw.number("reservation/UnusedRecurringFee") or zero)
    if line_item_type == "Fee" and raw.text("reservation/ReservationARN"):
        return zero
    return unblended


def _aws_to_focus(raw: _Raw) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    unblended = raw.number("lineItem/UnblendedCost")
    billed = raw.number("lineItem/NetUnblendedCost")
    billed = unblended if billed is None else billed  # focus_converters aws/billed_cost_S001.yaml
    line_item_type = raw.text("lineItem/LineItemType") or ""
    _set(out, "ChargePeriodStart", raw.text("lineItem/UsageStartDate"))
    _set(out, "ChargePeriodEnd", raw.text("lineItem/UsageEndDate"))
    _set(out, "BilledCost", billed)
    _set(out, "EffectiveCost", _aws_effective_cost(raw, line_item_type, unblended))
    rate, amount = raw.number("pricing/publicOnDemandRate"), raw.number("lineItem/UsageAmount")
    _set(
        out,
        "ListCost",
        rate * amount
        if rate is not None and amount is not None
        else raw.number("pricing/publicOnDemandCost"),
    )
    _set(out, "BillingCurrency", raw.text("lineItem/CurrencyCode"))
    out["ProviderName"] = "AWS"
    _set(out, "RegionId", raw.text("product/regionCode") or raw.text("product/region"))
    _set(out, "AvailabilityZone", raw.text("lineItem/AvailabilityZone"))
    _set(out, "ResourceId", raw.text("lineItem/ResourceId"))
    product = raw.text("lineItem/ProductCode")
    _set(out, "ServiceName", raw.text("product/ProductName") or product)
    if product:
        out["ServiceCategory"] = AWS_SERVICE_CATEGORY.get(product.lower(), "Other")
    _set(out, "SkuId", raw.text("product/sku"))
    _set(out, "SubAccountId", raw.text("lineItem/UsageAccountId"))
    _set(out, "BillingAccountId", raw.text("bill/PayerAccountId"))
    _set(out, "BillingPeriodStart", raw.text("bill/BillingPeriodStartDate"))
    _set(out, "BillingPeriodEnd", raw.text("bill/BillingPeriodEndDate"))
    _set(out, "InvoiceId", raw.text("bill/InvoiceId"))
    _set(
        out,
        "ChargeCategory",
        _AWS_CHARGE_CATEGORY.get(line_item_type, "Adjustment" if line_item_type else None),
    )
    _set(out, "ChargeDescription", raw.text("lineItem/LineItemDescription"))
    _set(out, "ConsumedQuantity", amount)
    _set(out, "ConsumedUnit", raw.text("pricing/unit"))
    _set(
        out,
        "CommitmentDiscountId",
        raw.text("reservation/ReservationARN") or raw.text("savingsPlan/SavingsPlanARN"),
    )
    _set(out, "x_LineItemType", line_item_type)
    _set(out, "x_UsageType", raw.text("lineItem/UsageType"))
    _set(out, "x_Operation", raw.text("lineItem/Operation"))
    _set(out, "x_InstanceType", raw.text("product/instanceType"))
    _set(out, "x_LineItemId", raw.text("identity/LineItemId"))
    _set(out, "x_TimeInterval", raw.text("identity/TimeInterval"))
    tags = {}
    for name, value in raw.row.items():
        if name.startswith("resourceTags/") and value.strip():
            tags[name.removeprefix("resourceTags/").removeprefix("user:")] = value.strip()
    if tags:
        out["Tags"] = json.dumps(tags, sort_keys=True)
    return out


def parse_aws_cur(
    lines: Iterable[str],
    *,
    path: str = "<input>",
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords (``source="aws-cur"``) from the lines of a legacy AWS Cost and Usage Report CSV.

    ``resourceTags/user:team`` becomes tag ``team`` (``resourceTags/aws:createdBy`` stays ``aws:createdBy``);
    ``product/instanceType`` drives GPU recognition when *catalog* is given. Raises IngestError when the
    header lacks ``lineItem/UsageStartDate``, ``lineItem/UsageEndDate`` or ``lineItem/UnblendedCost``.
    """
    required = ("lineItem/UsageStartDate", "lineItem/UsageEndDate", "lineItem/UnblendedCost")
    mapped = _AWS_MAPPED
    yield from _parse_raw(
        lines, source="aws-cur", path=path, catalog=catalog, assume_tz=assume_tz, report=report, rejected=rejected,
        required=required, hint="raw AWS Cost and Usage Report", to_focus=_aws_to_focus, mapped=mapped,
        identity=(("identity/LineItemId", "x_LineItemId"), ("identity/TimeInterval", "x_TimeInterval")),
    )  # fmt: skip


# --- Azure cost details (EA and MCA exports) ----------------------------------------------------------------

_AZURE_MAPPED = frozenset(
    {
        "Date", "CostInBillingCurrency", "Cost", "BillingCurrencyCode", "BillingCurrency", "ResourceLocation",
        "ResourceId", "ConsumedService", "MeterId", "SubscriptionId", "SubscriptionName", "BillingAccountId",
        "BillingAccountName", "ProductName", "Frequency", "PricingModel", "ChargeType", "Quantity",
        "UnitOfMeasure", "Tags", "PayGPrice", "EffectivePrice", "UnitPrice", "AvailabilityZone",
        "BillingPeriodStartDate", "BillingPeriodEndDate", "PublisherName", "benefitId", "benefitName",
        "ResourceName", "AdditionalInfo", "MeterName", "MeterSubCategory", "MeterCategory",
    }
)  # fmt: skip
_AZURE_FREQUENCY = {"OneTime": "One-Time", "Recurring": "Recurring", "UsageBased": "Usage-Based"}
_AZURE_PRICING = {
    "OnDemand": "On-Demand",
    "Spot": "Dynamic",
    "Reservation": "Commitment Discount",
    "Savings Plans": "Commitment Discount",
    "SavingsPlan": "Commitment Discount",
}
_AZURE_CHARGE = {
    "Usage": "Usage",
    "Purchase": "Purchase",
    "UnusedReservation": "Usage",
    "UnusedSavingsPlan": "Usage",
    "Refund": "Credit",
    "RoundingAdjustment": "Adjustment",
    "Tax": "Tax",
}


def _azure_date(column: str, text: str) -> date:
    """An Azure cost-details date: ``M/D/YYYY`` (EA exports) or ``YYYY-MM-DD`` (MCA and newer exports)."""
    text = text.strip()
    try:
        if "/" in text:
            return datetime.strptime(text, "%m/%d/%Y").date()
        return date.fromisoformat(text[:10])
    except ValueError:
        raise RowError(f"{column} {text!r} is not a date (M/D/YYYY or YYYY-MM-DD)") from None


def _utc_midnight(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


def _azure_instance_type(raw: _Raw) -> str | None:
    """The VM size from AdditionalInfo's ``ServiceType`` (e.g. ``Standard_ND96isr_H100_v5``), when present."""
    info = raw.text("AdditionalInfo")
    if not info or not info.startswith("{"):
        return None
    try:
        obj = json.loads(info)
    except json.JSONDecodeError:
        return None
    value = obj.get("ServiceType") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None


def _azure_to_focus(raw: _Raw) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    day_text = raw.text("Date")
    if day_text is None:
        raise RowError("Date is empty")
    day = _azure_date("Date", day_text)
    # Azure cost-detail dates are UTC days; focus_converters assigns UTC (azure/D017_S002, D003_S002)
    out["ChargePeriodStart"] = _utc_midnight(day)
    out["ChargePeriodEnd"] = _utc_midnight(day + timedelta(days=1))
    # older EA exports (and the finops-toolkit's EA test files) name the billing-currency cost ``Cost``
    cost = raw.number("CostInBillingCurrency") if "CostInBillingCurrency" in raw.row else raw.number("Cost")
    _set(out, "BilledCost", cost)  # azure/D015_S001
    _set(out, "EffectiveCost", cost)  # azure/D018_S001
    quantity, payg = raw.number("Quantity"), raw.number("PayGPrice")
    if quantity is not None and payg is not None:
        _set(out, "ListCost", payg * quantity)
    _set(out, "ListUnitPrice", payg)
    _set(out, "BillingCurrency", raw.text("BillingCurrencyCode") or raw.text("BillingCurrency"))  # D007
    out["ProviderName"] = "Microsoft"
    location = raw.text("ResourceLocation")  # D005
    _set(out, "RegionId", location.lower().replace(" ", "") if location else None)
    _set(out, "AvailabilityZone", raw.text("AvailabilityZone"))
    _set(out, "ResourceId", raw.text("ResourceId"))
    _set(out, "ResourceName", raw.text("ResourceName"))
    service = raw.text("ConsumedService")
    _set(out, "ServiceName", service)  # D001
    if service:
        out["ServiceCategory"] = AZURE_SERVICE_CATEGORY.get(service.lower(), "Other")  # D009
    _set(out, "SkuId", raw.text("MeterId"))
    _set(out, "SubAccountId", raw.text("SubscriptionId"))
    _set(out, "SubAccountName", raw.text("SubscriptionName"))  # D006
    _set(out, "BillingAccountId", raw.text("BillingAccountId"))  # D014
    _set(out, "BillingAccountName", raw.text("BillingAccountName"))  # D013
    for column, name in (
        ("BillingPeriodStartDate", "BillingPeriodStart"),
        ("BillingPeriodEndDate", "BillingPeriodEnd"),
    ):
        value = raw.text(column)
        if value:
            out[name] = _utc_midnight(_azure_date(column, value))
    _set(out, "ChargeDescription", raw.text("ProductName"))  # D020
    frequency = raw.text("Frequency")
    _set(out, "ChargeFrequency", _AZURE_FREQUENCY.get(frequency, "Other") if frequency else None)  # D021
    pricing = raw.text("PricingModel")
    _set(out, "PricingCategory", _AZURE_PRICING.get(pricing, "Other") if pricing else None)  # D022
    charge = raw.text("ChargeType")
    _set(out, "ChargeCategory", _AZURE_CHARGE.get(charge, "Adjustment") if charge else None)
    _set(out, "ConsumedQuantity", quantity)
    _set(out, "ConsumedUnit", raw.text("UnitOfMeasure"))
    _set(out, "PublisherName", raw.text("PublisherName"))  # D016
    _set(out, "CommitmentDiscountId", raw.text("benefitId"))  # D025
    _set(out, "CommitmentDiscountName", raw.text("benefitName"))
    _set(out, "SkuMeter", " - ".join(filter(None, (raw.text("MeterSubCategory"), raw.text("MeterName")))))
    _set(out, "x_InstanceType", _azure_instance_type(raw))
    _set(out, "x_MeterCategory", raw.text("MeterCategory"))
    _set(out, "Tags", raw.text("Tags"))
    return out


def parse_azure_cost_export(
    lines: Iterable[str],
    *,
    path: str = "<input>",
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords (``source="azure"``) from the lines of an Azure EA or MCA cost-details CSV export.

    Each row covers one UTC day (``Date``), so ChargePeriodEnd is the next midnight; *assume_tz* is
    accepted for a uniform signature and unused (Azure dates carry no time of day). Brace-less Azure
    ``Tags`` (``"k": "v","k2": "v2"``) are read as JSON. The cost is ``CostInBillingCurrency`` or, in older EA
    exports (e.g. microsoft/finops-toolkit's ``EA_ActualCost_Small.csv``), ``Cost``. Raises IngestError when the
    header lacks ``Date`` or both cost columns.
    """
    yield from _parse_raw(
        lines, source="azure", path=path, catalog=catalog, assume_tz=assume_tz, report=report, rejected=rejected,
        required=("Date", ("CostInBillingCurrency", "Cost")), hint="raw Azure cost export", to_focus=_azure_to_focus,
        mapped=_AZURE_MAPPED,
    )  # fmt: skip


# --- OCI cost report --------------------------------------------------------------------------------------

_OCI_MAPPED = frozenset(
    {
        "lineItem/intervalUsageStart", "lineItem/intervalUsageEnd", "cost/myCost", "cost/currencyCode",
        "product/region", "product/resourceId", "cost/productSku", "product/service", "lineItem/tenantId",
        "cost/subscriptionId", "usage/billedQuantity", "cost/skuUnitDescription", "product/Description",
        "cost/unitPrice", "product/availabilityDomain", "product/compartmentName", "lineItem/referenceNo",
    }
)  # fmt: skip


def _oci_to_focus(raw: _Raw) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for column, name in (
        ("lineItem/intervalUsageStart", "ChargePeriodStart"),
        ("lineItem/intervalUsageEnd", "ChargePeriodEnd"),
    ):
        value = raw.text(column)
        _set(out, name, value)
    _set(out, "BilledCost", raw.number("cost/myCost"))
    _set(out, "EffectiveCost", raw.number("cost/myCost"))
    unit_price, quantity = raw.number("cost/unitPrice"), raw.number("usage/billedQuantity")
    _set(out, "ListUnitPrice", unit_price)
    _set(out, "BillingCurrency", raw.text("cost/currencyCode"))
    out["ProviderName"] = "Oracle"
    _set(out, "RegionId", raw.text("product/region"))  # oci/1_region_S001
    _set(out, "AvailabilityZone", raw.text("product/availabilityDomain"))
    _set(out, "ResourceId", raw.text("product/resourceId"))  # oci/1_resource_id_S001
    _set(out, "SkuId", raw.text("cost/productSku"))  # oci/1_sku_id_S001
    service = raw.text("product/service")
    _set(out, "ServiceName", service)  # oci/1_service_name_S001
    if service:
        out["ServiceCategory"] = OCI_SERVICE_CATEGORY.get(service.upper(), "Other")
    _set(out, "SubAccountId", raw.text("lineItem/tenantId"))  # oci/1_sub_account_id_S001
    _set(out, "SubAccountName", raw.text("product/compartmentName"))
    _set(out, "BillingAccountId", raw.text("cost/subscriptionId"))  # oci/1_billing_account_id_S001
    _set(out, "ConsumedQuantity", quantity)  # oci/1_consumed_quantity_S001
    _set(out, "ConsumedUnit", raw.text("cost/skuUnitDescription"))
    _set(out, "ChargeDescription", raw.text("product/Description"))
    _set(out, "ChargeCategory", "Usage")
    _set(out, "x_ReferenceNo", raw.text("lineItem/referenceNo"))
    tags = {}
    for name, value in raw.row.items():
        if name.startswith("tags/") and value.strip():
            tags[name.removeprefix("tags/")] = value.strip()
    if tags:
        out["Tags"] = json.dumps(tags, sort_keys=True)
    return out


def parse_oci_cost_report(
    lines: Iterable[str],
    *,
    path: str = "<input>",
    catalog: Catalog | None = None,
    assume_tz: str | tzinfo | None = None,
    report: ParseReport | None = None,
    rejected: list[RejectedRow] | None = None,
) -> Iterator[UsageRecord]:
    """UsageRecords (``source="oci"``) from the lines of an Oracle Cloud cost report CSV.

    BilledCost is ``cost/myCost`` (focus_converters maps ``cost/myCostOverage``, which is empty in
    ordinary reports; see docs/ingest/focus.md). ``tags/<namespace>.<key>`` columns become tags named
    ``<namespace>.<key>``. Raises IngestError when the header lacks the interval or ``cost/myCost`` columns.
    """
    required = ("lineItem/intervalUsageStart", "lineItem/intervalUsageEnd", "cost/myCost")
    yield from _parse_raw(
        lines, source="oci", path=path, catalog=catalog, assume_tz=assume_tz, report=report, rejected=rejected,
        required=required, hint="raw OCI cost report", to_focus=_oci_to_focus, mapped=_OCI_MAPPED,
        identity=(("lineItem/referenceNo", "x_ReferenceNo"),),
    )  # fmt: skip
