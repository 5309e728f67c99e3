"""One vocabulary: the canonical spelling of workload kinds, pricing kinds and ingest sources.

Each name has exactly one spelling on the wire (CLI options, REST bodies and responses, policy files) and in the
database. Other spellings people type are accepted as input aliases and turned into the canonical one; anything
else is an :class:`~flopwise.errors.InputError` that names the field, the accepted values and the closest match.

==================  ==========================================================  =================================
vocabulary          canonical spellings                                         accepted aliases (examples)
==================  ==========================================================  =================================
workload kind       ``train`` ``fine-tune`` ``serve`` ``batch-inference``       ``fine_tune``, ``finetune``,
                                                                                ``batch_inference``, ``batch``
pricing kind        ``on-demand`` ``spot`` ``reserved`` ``onprem``              ``on_demand``, ``ondemand``,
                                                                                ``on-prem``, ``on_prem``
ingest source       ``slurm`` ``focus`` ``aws-cur`` ``azure`` ``oci`` ``dcgm``  ``sacct``, ``aws_cur``, ``cur``,
                    ``nvidia-smi`` ``opencost`` ``nvml``                        ``nvidia_smi``
==================  ==========================================================  =================================

Matching ignores case, surrounding blanks, and treats ``_`` and blanks as ``-``. Pure (no I/O), stdlib only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flopwise.errors import InputError, suggest

__all__ = [
    "FILE_SOURCES",
    "INGEST_SOURCES",
    "PRICING_KINDS",
    "TRAINING_WORKLOADS",
    "WORKLOAD_KINDS",
    "canonical",
    "canonical_many",
    "ingest_source",
    "pricing_kind",
    "workload_kind",
]

#: what a compute request runs
WORKLOAD_KINDS: tuple[str, ...] = ("train", "fine-tune", "serve", "batch-inference")
#: workload kinds that train weights (EU AI Act training-compute thresholds apply to them)
TRAINING_WORKLOADS: tuple[str, ...] = ("train", "fine-tune")
#: how the capacity is bought; ``onprem`` is owned hardware (also the provider name of on-prem capacity)
PRICING_KINDS: tuple[str, ...] = ("on-demand", "spot", "reserved", "onprem")
#: where usage records come from; ``nvml`` is the agent's live sampler, the others are files
INGEST_SOURCES: tuple[str, ...] = (
    "slurm", "focus", "aws-cur", "azure", "oci", "dcgm", "nvidia-smi", "opencost", "nvml",
)  # fmt: skip
#: the sources ``flopwise ingest`` reads from a file
FILE_SOURCES: tuple[str, ...] = tuple(s for s in INGEST_SOURCES if s != "nvml")

_WORKLOAD_ALIASES = {
    "finetune": "fine-tune",
    "fine-tuning": "fine-tune",
    "finetuning": "fine-tune",
    "training": "train",
    "serving": "serve",
    "batch": "batch-inference",
    "batchinference": "batch-inference",
    "batch-infer": "batch-inference",
}
_PRICING_ALIASES = {
    "ondemand": "on-demand",
    "on-prem": "onprem",
    "on-premise": "onprem",
    "on-premises": "onprem",
    "owned": "onprem",
    "preemptible": "spot",
}
_SOURCE_ALIASES = {
    "sacct": "slurm",
    "cur": "aws-cur",
    "awscur": "aws-cur",
    "nvidiasmi": "nvidia-smi",
    "azure-cost": "azure",
    "oci-cost": "oci",
    "dcgm-exporter": "dcgm",
}

_KINDS: dict[str, tuple[tuple[str, ...], Mapping[str, str]]] = {
    "workload": (WORKLOAD_KINDS, _WORKLOAD_ALIASES),
    "pricing": (PRICING_KINDS, _PRICING_ALIASES),
    "source": (INGEST_SOURCES, _SOURCE_ALIASES),
}


def _key(text: str) -> str:
    return "-".join(text.strip().lower().replace("_", " ").replace("-", " ").split())


def canonical(
    vocabulary: str, value: object, field: str | None = None, allowed: Iterable[str] | None = None
) -> str:
    """The canonical spelling of *value* in *vocabulary* (``workload``, ``pricing`` or ``source``).

    *allowed* narrows the accepted canonical names (e.g. the file sources). Raises InputError naming *field*
    (default: the vocabulary) with the accepted names and the closest match for anything else.
    """
    names, aliases = _KINDS[vocabulary]
    accepted = tuple(allowed) if allowed is not None else names
    where = field or vocabulary
    if isinstance(value, str):
        key = _key(value)
        name = key if key in names else aliases.get(key)
        if name is not None and name in accepted:
            return name
        close = suggest(key, [*accepted, *(a for a, n in aliases.items() if n in accepted)])
        hint = ""
        if close:
            hint = f" (did you mean {(aliases.get(close[0]) or close[0])!r}?)"
        raise InputError(where, value, f"use one of {', '.join(accepted)}{hint}")
    raise InputError(where, value, f"give a name, one of {', '.join(accepted)}")


def canonical_many(
    vocabulary: str, values: Iterable[object], field: str | None = None, allowed: Iterable[str] | None = None
) -> tuple[str, ...]:
    """:func:`canonical` of each value, duplicates dropped, order kept; errors name the item (``pricing[1]``)."""
    out: list[str] = []
    for i, value in enumerate(values):
        name = canonical(vocabulary, value, f"{field or vocabulary}[{i}]", allowed)
        if name not in out:
            out.append(name)
    return tuple(out)


def workload_kind(value: object, field: str = "workload") -> str:
    """The canonical workload kind (``fine_tune`` -> ``fine-tune``); InputError with a suggestion otherwise."""
    return canonical("workload", value, field)


def pricing_kind(value: object, field: str = "pricing") -> str:
    """The canonical pricing kind (``on_demand`` -> ``on-demand``, ``on-prem`` -> ``onprem``)."""
    return canonical("pricing", value, field)


def ingest_source(value: object, field: str = "source", allowed: Iterable[str] | None = None) -> str:
    """The canonical ingest source name (``sacct`` -> ``slurm``, ``nvidia_smi`` -> ``nvidia-smi``)."""
    return canonical("source", value, field, allowed)
