"""Sink tasks: each writes records from Bayou into one kind of target."""
