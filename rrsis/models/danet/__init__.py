"""danet model family: LAVT baseline with EAAS (explicit affinity alignment) and RAAM (reliable agents)."""
