"""Fault-injection suite (issue 6): crashes, outages, network faults, lost slots, a full target and
missing privileges against real servers; after each fault the target must equal the source."""
