"""The city's cloud core: registry, access decisions, signed grants, signalling relay, audit."""
