"""IKEv1 (RFC 2407/2408/2409): Main Mode, Quick Mode and Informational as a sans-IO core."""
