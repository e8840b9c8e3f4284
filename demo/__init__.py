"""The local stack: PVE emulator + one agent per node + coordinator, as real processes.

`make demo` runs it in the foreground; the tests start the same stack on free ports.
"""
