"""The expected outputs of a log: the same plan and the same Processor, without Kafka or Faust.

Used by the integration tests (replayed over the real broker, the topology must give exactly
these records), by the soak verifier and by what-if runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.config import Settings
from streams.domain.model import Model
from streams.domain.rules import Rules
from streams.processor import InRecord, MemoryPartitionStore, OutRecord, Processor


@dataclass
class ReferenceRun:
    outputs: list[OutRecord] = field(default_factory=list)
    stores: dict[int, MemoryPartitionStore] = field(default_factory=dict)
    processor: Processor | None = None


def run_reference(
    settings: Settings, rules: Rules, model: Model, records: list[InRecord]
) -> ReferenceRun:
    run = ReferenceRun()

    def store_for(partition: int) -> MemoryPartitionStore:
        return run.stores.setdefault(partition, MemoryPartitionStore())

    processor = Processor(settings, rules, model, store_for)
    run.processor = processor
    for record in records:
        run.outputs.extend(processor.process(record))
    run.outputs.extend(processor.drain_profiles())
    return run
