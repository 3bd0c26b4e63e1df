"""Ray: the session, the actors, the solver dispatcher, and store generation on actors."""
