"""Portability: how locked-in the traffic is, and what would happen without a vendor (reads usage, calls the engine)."""
