"""The commands, one module per group; each ``add(sub)`` declares its parsers and sets
``run``, an ``async (api, args, out) -> Exit``."""
