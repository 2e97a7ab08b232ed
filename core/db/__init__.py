"""Persistence: tables, the async engine and sessions, and the repositories."""
