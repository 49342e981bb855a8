"""Shared fixtures: a unit-cost system where every action costs 1 pJ and 1 ns where possible."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

UNIT_YAML = """\
name: unit
analog:
  tile_count: 8
  static_power_mw_per_tile: 0.0
  tile:
    rows: 4
    cols: 4
    tiers: 2
    devices_per_weight: 1
    integration_ns: 1.0
    array_energy_fj_per_cell: 1000.0
  dac: {bits: 2, encoding: pwm, step_ns: 1.0, energy_pj_per_conversion: 1.0, per_tile: 4}
  adc: {bits: 8, per_tile: 4, conversion_ns: 1.0, energy_pj_per_conversion: 1.0}
digital:
  simd:
    cores: 1
    macs_per_cycle: 1
    clock_ghz: 1.0
    energy_pj_per_mac: {int8: 1.0}
    vector_ops_per_cycle: 1
    energy_pj_per_vector_op: 1.0
    static_power_mw_per_core: 0.0
memory:
  sram: {capacity_mib: 1, bandwidth_gbps: 8, energy_pj_per_byte: 1.0}
  dram: {bandwidth_gbps: 8, energy_pj_per_bit: 0.125, latency_ns: 1.0, static_power_mw_per_channel: 0.0}
noc:
  topology: mesh
  width: 2
  height: 2
  tiles_per_node: 2
  link_bandwidth_gbps: 8
  router_latency_ns: 1.0
  energy_pj_per_bit_per_hop: 0.125
  simd_node: [0, 0]
  dram_node: [0, 0]
precision: {activation_bits: 2, digital_weight_bits: 8, digital_mac: int8, partial_sum_bits: 8}
"""


@pytest.fixture
def unit_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(UNIT_YAML)
    return path


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it is not shipped with the repository)")
    return SHARED_DATA


def graph_yaml(edges: str, tile_nodes: str, tiles_per_node: int) -> str:
    """UNIT_YAML with its mesh replaced by an explicit graph over nodes a, b, c (SIMD and DRAM at a)."""
    return UNIT_YAML.split("noc:")[0] + f"""noc:
  topology: graph
  nodes: [a, b, c]
  edges: {edges}
  tile_nodes: {tile_nodes}
  tiles_per_node: {tiles_per_node}
  link_bandwidth_gbps: 8
  router_latency_ns: 1.0
  energy_pj_per_bit_per_hop: 0.125
  simd_node: a
  dram_node: a
precision: {{activation_bits: 2, digital_weight_bits: 8, digital_mac: int8}}
"""
