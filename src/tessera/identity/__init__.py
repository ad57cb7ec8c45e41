"""Operators, users, services, agents, models, credentials and the agent lifecycle."""
