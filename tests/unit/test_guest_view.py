"""Reading the guest view from qemu-img map extents (agent/transfer/guest_view.py), with maps
qemu-img 7.2 printed for a raw file, a qcow2 and a compressed qcow2 of the same content."""

from __future__ import annotations

import pytest

from agent.transfer.guest_view import Extent, GuestLayout, MapRefused, identity, parse_map

MiB = 1 << 20
# ruff: noqa: E501 (qemu-img's lines as it prints them)
RAW = """[{ "start": 0, "length": 5242880, "depth": 0, "present": true, "zero": true, "data": false, "offset": 0},
{ "start": 5242880, "length": 3145728, "depth": 0, "present": true, "zero": false, "data": true, "offset": 5242880},
{ "start": 8388608, "length": 58720256, "depth": 0, "present": true, "zero": true, "data": false, "offset": 8388608}]"""
QCOW2 = """[{ "start": 0, "length": 5242880, "depth": 0, "present": false, "zero": true, "data": false},
{ "start": 5242880, "length": 3145728, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 8388608, "length": 58720256, "depth": 0, "present": false, "zero": true, "data": false}]"""
COMPRESSED = """[{ "start": 0, "length": 5242880, "depth": 0, "present": false, "zero": true, "data": false},
{ "start": 5242880, "length": 3145728, "depth": 0, "present": true, "zero": false, "data": true},
{ "start": 8388608, "length": 58720256, "depth": 0, "present": false, "zero": true, "data": false}]"""


def test_a_raw_map_reads_data_at_its_guest_offset_and_holes_as_zeros() -> None:
    extents = parse_map(RAW, 64 * MiB)
    assert extents == [
        Extent(0, 5 * MiB, None),
        Extent(5 * MiB, 3 * MiB, 5 * MiB),
        Extent(8 * MiB, 56 * MiB, None),
    ]


def test_a_qcow2_chunk_is_read_where_its_clusters_are_in_the_file() -> None:
    layout = GuestLayout(parse_map(QCOW2, 64 * MiB))
    # The chunk [4 MiB, 8 MiB): 1 MiB of zeros, then 3 MiB from host offset 327680.
    assert list(layout.segments(4 * MiB, 4 * MiB)) == [(MiB, None), (3 * MiB, 327680)]
    assert layout.all_zero(8 * MiB, 4 * MiB) and not layout.all_zero(4 * MiB, 4 * MiB)
    assert layout.file_end() == 327680 + 3 * MiB


def test_compressed_clusters_or_a_backing_file_cannot_be_read_in_place() -> None:
    with pytest.raises(MapRefused, match="no plain host offset"):
        parse_map(COMPRESSED, 64 * MiB)
    backing = QCOW2.replace('"depth": 0, "present": false', '"depth": 1, "present": false', 1)
    with pytest.raises(MapRefused, match="backing"):
        parse_map(backing, 64 * MiB)
    with pytest.raises(MapRefused, match="compressed"):
        parse_map(QCOW2.replace('"data": true,', '"data": true, "compressed": true,'), 64 * MiB)


def test_a_map_that_does_not_cover_the_image_is_refused() -> None:
    with pytest.raises(MapRefused, match="covers"):
        parse_map(RAW, 65 * MiB)
    gap = RAW.replace('"start": 5242880', '"start": 5242881')
    with pytest.raises(MapRefused, match="gap"):
        parse_map(gap, 64 * MiB)
    with pytest.raises(MapRefused, match="JSON"):
        parse_map("qemu-img: oops", 64 * MiB)


def test_neighbouring_extents_that_continue_each_other_merge() -> None:
    rows = """[{"start": 0, "length": 10, "zero": false, "data": true, "offset": 100},
    {"start": 10, "length": 5, "zero": false, "data": true, "offset": 110},
    {"start": 15, "length": 5, "zero": false, "data": true, "offset": 500}]"""
    assert parse_map(rows, 20) == [Extent(0, 15, 100), Extent(15, 5, 500)]


def test_a_received_copy_is_its_own_guest_view() -> None:
    layout = GuestLayout(identity(10 * MiB))
    assert list(layout.segments(4 * MiB, 4 * MiB)) == [(4 * MiB, 4 * MiB)]
    with pytest.raises(ValueError, match="outside"):
        list(layout.segments(8 * MiB, 4 * MiB))
