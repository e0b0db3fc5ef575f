"""Typed results: the blocks of one model (blocks.py), the whole audit (document.py), and the record machinery
that writes, reads and checks them (record.py, checks.py)."""

from .blocks import (
                     AblationRow,
                     Adapter,
                     Behavior,
                     BorderlineRate,
                     ForcedPrefix,
                     HarmfulRate,
                     LayerUnits,
                     ModelBlock,
                     Probe,
                     RefusalScore,
                     Sample,
                     Units,
                     Utility,
)
from .document import (
                     SCHEMA,
                     SCHEMA_VERSION,
                     AuditResult,
                     BehaviorDeltas,
                     CheckResult,
                     Comparison,
                     Delta,
                     FrontierPoint,
                     Gate,
                     ProbeComparison,
                     Remedy,
                     RepairOption,
                     UnitComparison,
                     read_results_document,
)
from .record import Record

__all__ = ["SCHEMA", "SCHEMA_VERSION", "AblationRow", "Adapter", "AuditResult", "Behavior", "BehaviorDeltas",
           "BorderlineRate", "CheckResult", "Comparison", "Delta", "ForcedPrefix", "Gate", "HarmfulRate", "LayerUnits",
           "ModelBlock", "Probe", "ProbeComparison", "Record", "RefusalScore", "Remedy", "RepairOption",
           "FrontierPoint", "Sample", "UnitComparison", "Units", "Utility", "read_results_document"]
