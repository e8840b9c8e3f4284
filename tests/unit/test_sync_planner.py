"""Which sync tasks start, as which chains, within the per-node limits."""

from __future__ import annotations

from collections import Counter

from coordinator.jobs.sync_planner import Copy, Due, Load, plan_chains

NODES = {1, 2, 3, 4, 5}


def due(task_id: int, upload: int, node: int) -> Due:
    return Due(task_id, upload, node)


def test_one_template_to_many_nodes_is_one_chain_leaving_the_source_once() -> None:
    chains = plan_chains(
        [due(1, 1, 2), due(2, 1, 3), due(3, 1, 4), due(4, 1, 5)],
        [Copy(1, 1, "upload-1.qcow2", True)],
        NODES,
        Load(),
        2,
        2,
    )
    assert [(c.source.node_id, [h.target_node_id for h in c.hops]) for c in chains] == [(1, [2, 3, 4, 5])]


def test_limits_hold_for_three_templates_to_two_nodes() -> None:
    tasks = [due(10 * u + n, u, n) for u in (1, 2, 3) for n in (2, 3)]
    copies = [Copy(u, 1, f"upload-{u}.raw", True) for u in (1, 2, 3)]
    chains = plan_chains(tasks, copies, NODES, Load(), 2, 2)
    inbound, outbound = Counter[int](), Counter[int]()
    for chain in chains:
        tail = chain.source.node_id
        for hop in chain.hops:
            outbound[tail] += 1
            inbound[hop.target_node_id] += 1
            tail = hop.target_node_id
    assert max(inbound.values()) <= 2 and max(outbound.values()) <= 2
    assert len(chains) == 2  # the third template waits for a free slot on node 1


def test_running_transfers_count_and_busy_targets_wait() -> None:
    load = Load(inbound=Counter({2: 2}), outbound=Counter({1: 1}))
    chains = plan_chains([due(1, 1, 2), due(2, 1, 3)], [Copy(1, 1, "u", True)], NODES, load, 2, 2)
    assert [[h.task_id for h in c.hops] for c in chains] == [[2]]


def test_a_finished_target_serves_when_the_source_is_busy() -> None:
    copies = [Copy(1, 1, "u", True), Copy(1, 2, "s", False)]
    chains = plan_chains([due(5, 1, 4)], copies, NODES, Load(outbound=Counter({1: 2})), 2, 2)
    assert [(c.source.node_id, c.source.staged_name) for c in chains] == [(2, "s")]


def test_dead_agents_are_neither_sources_nor_targets() -> None:
    chains = plan_chains(
        [due(1, 1, 2), due(2, 1, 3)], [Copy(1, 1, "u", True), Copy(1, 4, "s", False)], {1, 3}, Load(), 2, 2
    )
    assert [(c.source.node_id, [h.target_node_id for h in c.hops]) for c in chains] == [(1, [3])]
    assert plan_chains([due(1, 1, 2)], [Copy(1, 1, "u", True)], {2}, Load(), 2, 2) == []


def test_a_relay_without_a_free_outbound_slot_ends_its_chain() -> None:
    load = Load(outbound=Counter({2: 2}))
    chains = plan_chains([due(1, 1, 2), due(2, 1, 3)], [Copy(1, 1, "u", True)], NODES, load, 2, 2)
    assert [[h.target_node_id for h in c.hops] for c in chains] == [[2], [3]]
