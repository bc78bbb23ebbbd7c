"""The producers' partitioner (shared/messaging.py) sends a key where aiokafka's default
partitioner (Kafka's murmur2) does: same hash, same partition, for any key."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.messaging import DefaultPartitioner, murmur2


@settings(deadline=None)  # no timed assertion: a loaded machine takes its time
@given(st.binary(max_size=200))
def test_murmur2_is_kafkas(key):
    assert murmur2(key) == aiokafka_murmur2(key)


@settings(deadline=None)  # no timed assertion: a loaded machine takes its time
@given(st.uuids(), st.integers(1, 64))
def test_a_case_key_goes_to_the_same_partition(case_id: uuid.UUID, partitions: int):
    key = str(case_id).encode()
    all_partitions = list(range(partitions))
    assert DefaultPartitioner()(key, all_partitions, all_partitions) == AiokafkaPartitioner()(key, all_partitions, all_partitions)


def test_no_key_goes_to_an_available_partition():
    assert DefaultPartitioner()(None, [0, 1, 2], [2]) == 2
