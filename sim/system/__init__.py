"""Systems of several chips (DESIGN §10, issue 31): expert placement across chips (``layout``), the MoE
all-to-all on the interconnect (``topology``, ``alltoall``), a layer-synchronous system model (``simulate``),
sizing (``fit``) and the report's figures (``plots``). A one-chip system runs the single-chip engine unchanged."""
