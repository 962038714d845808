"""Lua scripts and the wait bound shared by the tests of the two script paths (pooled and pipelined)."""

from __future__ import annotations

ECHO = "return {KEYS[1], ARGV[1]}"
# Keeps Redis busy for 0.2 s, so that a call is still waiting for its reply when the test acts.
SLOW = """
local t = redis.call('TIME')
repeat local n = redis.call('TIME') until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 200000
return ARGV[1]
"""
SAFETY_S = 10.0  # a bound so that a hang fails the test instead of stalling the suite; not a timing assertion
