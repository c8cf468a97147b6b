"""IKEv2 (RFC 7296) as a sans-IO core."""
