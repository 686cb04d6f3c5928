"""The table kept per piece: a change costs its pieces' commands, and the table reached
is the one a fresh build of the same program makes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knm.core.events.vrouter import VrouterConfigured
from services.agent.linux.incremental import PieceTables
from services.agent.linux.ruleset import MIN_CAPACITY, capacity, desired_tables, full
from services.agent.program import NODE, NodeProgram, vip_piece
from tests.services.agent.linux.test_ruleset import Table, program, programs, vip


def staged(state: PieceTables, program: NodeProgram, *, per_stage: int) -> list[Any]:
    """The stages' commands in turn, checking that only the last hooks the table."""
    stages = list(state.stages(program, per_stage=per_stage))
    hooked = [
        [
            "hook" in body["chain"]
            for command in stage
            for body in command.values()
            if "chain" in body
        ]
        for stage in stages
    ]
    assert not any(any(stage) for stage in hooked[:-1]), "hooked before the table was whole"
    assert hooked[-1]
    assert all(hooked[-1])
    return [command for stage in stages for command in stage]


@settings(max_examples=150, deadline=None)
@given(st.lists(programs(), min_size=1, max_size=6), st.sampled_from([None, 1, 2, 5]))
def test_piecewise_changes_reach_the_table_a_fresh_build_makes(
    sequence: list[VrouterConfigured], per_stage: int | None
) -> None:
    """Built in one transaction or in stages of `per_stage` pieces, then changed piece by
    piece."""
    folded = NodeProgram("node-1")
    state = PieceTables()
    kernel = Table()
    for config in sequence:
        changed = folded.take(config)
        if state.built:
            kernel.apply(state.update(folded, changed))
        elif per_stage is None:
            kernel.apply(state.rebuild(folded))
        else:
            kernel.apply(staged(state, folded, per_stage=per_stage))

        fresh = Table()
        fresh.apply(full(desired_tables(config, numbers=state.numbers)))
        assert kernel.sets == fresh.sets
        assert kernel.chains == fresh.chains
        assert kernel.consistent()


def test_a_backend_change_costs_that_vips_slots_only() -> None:
    vips = tuple(vip(f"10.254.0.{n}", 1, 2, 3) for n in range(1, 50))
    folded = NodeProgram("node-1")
    folded.take(program(pods={1: "shop/web"}, vips=vips, allows=len(vips)))
    state = PieceTables()
    state.rebuild(folded)

    changed = folded.take(
        program(
            pods={1: "shop/web"},
            vips=(*vips[:-1], vip("10.254.0.49", 1, 2, 4)),
            allows=len(vips),
        )
    )
    commands = state.update(folded, changed)

    assert changed == {vip_piece("10.254.0.49")}
    # The third slot's address, out and in; nothing else (the port is the VIP's).
    assert len(commands) == 2
    assert all("10.254.0.49" in str(command) for command in commands)


def test_nothing_changed_no_commands() -> None:
    folded = NodeProgram("node-1")
    config = program(pods={1: "shop/web", 2: "shop/db"}, vips=(vip("10.254.0.1", 1),), allows=1)
    folded.take(config)
    state = PieceTables()
    state.rebuild(folded)

    assert folded.take(config) == set()
    assert state.update(folded, set()) == []


def test_a_new_gateway_rebuilds_the_table() -> None:
    folded = NodeProgram("node-1")
    config = program(pods={1: "shop/web"})
    folded.take(config)
    state = PieceTables()
    state.rebuild(folded)

    changed = folded.take(config.model_copy(update={"gateway": "169.254.9.9"}))
    commands = state.update(folded, changed)

    assert changed == {NODE}
    assert commands[:3] == full(state.tables())[:3]  # the table made again


def test_maps_outgrowing_their_declared_size_are_built_again_with_more_room() -> None:
    def declared(commands: list[dict[str, Any]]) -> dict[str, int]:
        return {
            body["map"]["name"]: body["map"]["size"]
            for command in commands
            for verb, body in command.items()
            if verb == "add" and "map" in body and "size" in body["map"]
        }

    def config(count: int) -> VrouterConfigured:
        vips = tuple(vip(f"10.254.{n // 250}.{n % 250 + 1}", 1, 2, 3, 4) for n in range(count))
        return program(pods={1: "shop/web"}, vips=vips, allows=count)

    folded = NodeProgram("node-1")
    folded.take(config(10))
    state = PieceTables()
    assert declared(state.rebuild(folded))["backend_addr"] == MIN_CAPACITY

    # Up to the declared size: changes as usual.
    grown = state.update(folded, folded.take(config(MIN_CAPACITY // 4)))
    assert declared(grown) == {}
    # Past it: the whole table again, with room for the slots to double.
    commands = state.update(folded, folded.take(config(MIN_CAPACITY // 4 + 1)))
    assert commands[:3] == full(state.tables())[:3]
    assert declared(commands)["backend_addr"] == capacity(MIN_CAPACITY + 4) == 4 * MIN_CAPACITY
    assert capacity(0) == MIN_CAPACITY


def test_stages_declare_the_room_of_a_whole_build_and_fill_it_a_part_at_a_time() -> None:
    vips = tuple(vip(f"10.254.0.{n}", 1, 2, 3) for n in range(1, 50))
    folded = NodeProgram("node-1")
    folded.take(program(pods={1: "shop/web"}, vips=vips, allows=len(vips)))
    whole = PieceTables()
    in_one = whole.rebuild(folded)
    state = PieceTables()
    stages = list(state.stages(folded, per_stage=10))

    # The node's piece, a network's, 49 VIPs: the table made, six fillings, the hooks.
    assert len(stages) == 1 + 6 + 1
    assert stages[0] == in_one[: len(stages[0])]
    assert state.tables() == whole.tables()
    kernel, fresh = Table(), Table()
    kernel.apply([command for stage in stages for command in stage])
    fresh.apply(in_one)
    assert (kernel.sets, kernel.chains) == (fresh.sets, fresh.chains)
    # Afterwards, changes as after a build in one.
    changed = folded.take(program(pods={1: "shop/web"}, vips=vips[:-1], allows=len(vips) - 1))
    assert state.update(folded, changed) == whole.update(folded, changed)
