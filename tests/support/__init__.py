"""Helpers shared by the test suites: real processes on loopback, never patched internals."""
