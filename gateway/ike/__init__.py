"""IKE: the parts shared by IKEv2 and IKEv1 (proposals, identities, certificates)."""
