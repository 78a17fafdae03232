"""The C partitioner agrees with the Kafka clients' own (a record must reach the partition the
producers' default partitioner picks, or a customer's state would be split)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.partitioning import key_partition, murmur2


@given(st.binary(min_size=0, max_size=300))
def test_murmur2_is_the_kafka_clients(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key) == kafka_python_murmur2(key)


@given(st.binary(min_size=0, max_size=64), st.integers(min_value=1, max_value=64))
def test_key_partition_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    everything = list(range(partitions))
    assert key_partition(key, partitions) == DefaultPartitioner()(key, everything, everything)


def test_known_values() -> None:
    """Kafka's Java ``Utils.murmur2`` on its own unit test's keys (signed there)."""
    java = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, signed in java.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key
