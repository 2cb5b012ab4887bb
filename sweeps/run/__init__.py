"""Orchestration of one sweep execution: plan, feeders, row building, provenance, progress (`runner`)."""
