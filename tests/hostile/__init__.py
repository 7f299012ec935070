"""Hostile folders, files, crashes and strangers: nothing lost, nothing leaked."""
