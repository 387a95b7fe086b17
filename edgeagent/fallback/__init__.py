"""Fallback chains: several providers of one kind as one stage, ordered by a policy."""
