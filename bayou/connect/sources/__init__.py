"""Source tasks: each reads changes from one kind of source into Bayou."""
