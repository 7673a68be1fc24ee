"""Role models of DyPS: the agent role (VLSTM, paper §3.2.2) and the group role (CVAE, §3.2.1)."""
